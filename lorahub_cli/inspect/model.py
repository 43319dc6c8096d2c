"""Plain data passed between the inspection stages (containers -> layout -> family -> report).

No torch here: safetensors files are described from their header alone.
Vocabulary (format, network, family, components, error codes) is the one in ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# safetensors dtype names, with their width in bytes
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,  # sub-byte types: an upper bound (the header reader validates exact bit widths)
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "C64": 8,
}

FORMATS = ("diffusers", "diffusers-old", "attn-procs", "peft", "kohya", "cloneofsimo", "lycoris")
NETWORKS = ("lora", "locon", "loha", "lokr", "dora", "oft", "ia3", "full", "glora")
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")
# text_encoder_3: SD3's T5; tokens: embedded textual-inversion vectors (cloneofsimo pivotal tuning, A1111 bundle_emb)
COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "tokens")


@dataclass(frozen=True)
class TensorSpec:
    dtype: str                                # safetensors vocabulary: F16, BF16, F32, ...
    shape: tuple[int, ...]
    offsets: Optional[tuple[int, int]] = None  # byte range inside the data section (safetensors only)

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES.get(self.dtype, 0)
        for d in self.shape:
            n *= d
        return n


@dataclass
class RawFile:
    """What a container reader found: tensor names, dtypes and shapes, and the string metadata.

    For safetensors nothing beyond the header is read; ``read_values(name)`` fetches one tensor's
    numbers when a stage needs them (an alpha scalar). For pickles the values were loaded already.
    """

    path: Path
    size: int
    container: str                             # "safetensors" | "pickle"
    tensors: dict[str, TensorSpec]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: Optional[int] = None           # safetensors: 8 + header length
    read_values: Optional[Callable[[str], Any]] = None  # name -> numpy array (float64 for floats)
    notes: list[str] = field(default_factory=list)      # reader remarks worth showing (e.g. "bare list payload")


@dataclass
class ModuleInfo:
    """One adapted layer: the stem of its keys in the file and what the tensors say about it."""

    key: str                           # stem as written in the file, e.g. "lora_unet_down_blocks_0_..._to_k"
    component: str                     # unet | text_encoder | text_encoder_2 | transformer
    rank: int
    in_features: Optional[int] = None  # down/A input width (channels for convs)
    out_features: Optional[int] = None
    kernel: Optional[tuple[int, ...]] = None   # conv kernel of the down weight, None for linear
    alpha_key: Optional[str] = None    # key of the stored alpha, if any
    tensor_keys: tuple[str, ...] = ()  # every key of the file that belongs to this module
    up_keys: tuple[str, ...] = ()      # the keys whose all-zero values mean "changes nothing"


@dataclass
class Layout:
    format: str                        # one of FORMATS
    network: str                       # one of NETWORKS
    modules: list[ModuleInfo]
    tokens: list[str] = field(default_factory=list)      # embedded textual-inversion tokens
    unknown_keys: list[str] = field(default_factory=list)


@dataclass
class Sourced:
    """A value and where it came from ("metadata:ss_base_model_version", "card:README.md", ...)."""

    value: Any
    source: str

    def to_dict(self) -> dict:
        return {"value": self.value, "source": self.source}


@dataclass
class Hashes:
    sha256: str
    tensor_sha256: Optional[str]       # data section only (kohya "addnet", Civitai AutoV3); safetensors only
    zero_up_keys: Optional[list[str]] = None   # up/B keys whose data is all zero (None: not checked)
    nonfinite_keys: Optional[list[str]] = None  # float tensors holding NaN or infinities (None: not checked)

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


@dataclass
class AdapterReport:
    """The result of ``lora inspect`` for one file; ``to_dict`` is the JSON object (keys are API)."""

    path: str
    size: int
    container: str
    format: str
    network: str
    family: str
    family_evidence: str
    components: list[str]
    rank: Optional[int]
    ranks: list[int]
    alpha: Optional[float]
    dtype: Optional[str]
    n_tensors: int
    n_modules: int
    tokens: list[str] = field(default_factory=list)
    sha256: Optional[str] = None
    autov2: Optional[str] = None
    tensor_sha256: Optional[str] = None
    base_model: Optional[str] = None
    base_model_source: Optional[str] = None        # "metadata:<key>", "card:<file>", "adapter_config.json"
    trigger_words: list[str] = field(default_factory=list)
    trigger_word_sources: dict[str, str] = field(default_factory=dict)
    license: Optional[str] = None
    license_source: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    kind: str = "lora"                     # lora | embedding (textual inversion, ``inspect.embedding``)
    vectors: Optional[int] = None          # embedding: how many token vectors
    widths: list[int] = field(default_factory=list)   # embedding: the vectors' widths (768, 1024, 768+1280)

    def to_dict(self) -> dict:
        return asdict(self)
