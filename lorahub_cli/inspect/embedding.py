"""Textual-inversion embeddings (``kind: embedding``), described from a container view alone (no torch).

Layouts met in the wild, each turned into tokens, vectors and widths:

* A1111 ``.pt``: ``{"string_to_param": {"*": [n, w]}, "string_to_token": {"*": 265}, "name", "step"}``;
  the pickle reader flattens it to ``string_to_param.*`` with ``name``/``step`` as metadata;
* A1111/Civitai ``.safetensors``: ``emb_params`` [n, w];
* diffusers ``learned_embeds.safetensors/.bin``: ``{token: [w] or [n, w]}``;
* SDXL: ``clip_l`` [n, 768] + ``clip_g`` [n, 1280] (A1111, ComfyUI), or ``text_encoders_0/1`` (the
  diffusers advanced DreamBooth script's own file).

A1111 prompts an A1111-style embedding by its file's stem, so that is the token reported for it; diffusers
files name their tokens. Pivotal-tuning tokens inside a LoRA (cloneofsimo ``<s1>``) stay a LoRA's
``tokens`` component (``layout``). Refusals: ``invalid-embedding`` for a width no text encoder has, zero
vectors or a shape that is not [w] / [n, w]; pickles that import code are refused by the reader before.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import InvalidEmbedding
from lorahub_cli.inspect.model import AdapterReport, Layout, RawFile, TensorSpec

# The token-embedding width of each text encoder a TI vector is trained for
WIDTHS = {768: "CLIP ViT-L", 1024: "OpenCLIP ViT-H", 1280: "OpenCLIP ViT-bigG"}
# Which pipeline encoder each SDXL key belongs to, with the width it must have
SDXL_KEYS = {"clip_l": ("text_encoder", 768), "clip_g": ("text_encoder_2", 1280),
             "text_encoders_0": ("text_encoder", 768), "text_encoders_1": ("text_encoder_2", 1280)}
_A1111_KEYS = re.compile(r"^(emb_params|string_to_param\..+|string_to_token\..+)$")
_TOKEN_KEY = re.compile(r"^<[^<>]+>$")
_MAX_VECTORS = 75   # CLIP's 77 positions less BOS/EOS: more vectors than that can never fit in a prompt


@dataclass(frozen=True)
class Vectors:
    """One tensor of token vectors: the key, which text encoder it is for, how many vectors, how wide."""

    key: str
    encoder: str        # text_encoder | text_encoder_2
    count: int
    width: int


def looks_like_embedding(raw: RawFile) -> bool:
    """Whether the keys are an embedding's: only A1111, SDXL or diffusers {token: vector} keys, nothing that
    belongs to a LoRA (a LoRA's own ``<s1>`` tokens keep it a LoRA)."""
    keys = list(raw.tensors)
    if not keys:
        return False
    if all(_A1111_KEYS.match(k) for k in keys) and any(not k.startswith("string_to_token") for k in keys):
        return True
    if set(keys) <= set(SDXL_KEYS):
        return True
    # diffusers learned_embeds: a few vectors named by their token, no dots (a LoRA's keys always have them);
    # a "<token>" key is one whatever its shape (so a bad width is refused as such), any other name only
    # when its shape is a plausible embedding's
    return len(keys) <= 16 and all(
        "." not in k and ":" not in k and (_TOKEN_KEY.match(k) or _plausible(s)) for k, s in raw.tensors.items())


def _plausible(spec: TensorSpec) -> bool:
    return 1 <= len(spec.shape) <= 2 and spec.shape[-1] in WIDTHS and (len(spec.shape) == 1
                                                                         or 1 <= spec.shape[0] <= _MAX_VECTORS)


def embedding_layout(raw: RawFile) -> str:
    """``a1111``, ``sdxl-ti`` or ``diffusers-ti`` (the vocabulary's embedding formats)."""
    keys = set(raw.tensors)
    if keys <= set(SDXL_KEYS):
        return "sdxl-ti"
    if all(_A1111_KEYS.match(k) for k in keys):
        return "a1111"
    return "diffusers-ti"


def vectors_of(raw: RawFile) -> list[Vectors]:
    """Every vector tensor with its encoder and width; raises InvalidEmbedding for shapes no encoder takes."""
    out = []
    for key, spec in raw.tensors.items():
        if key.startswith("string_to_token"):
            continue   # A1111's placeholder token id, not a vector
        count, width = _count_width(key, spec)
        encoder, wanted = SDXL_KEYS.get(key, ("text_encoder", None))
        if wanted is not None and width != wanted:
            raise InvalidEmbedding(f"'{key}' holds vectors of width {width}, but {key} is the "
                                   f"{WIDTHS[wanted]} encoder's ({wanted} wide)")
        out.append(Vectors(key, encoder, count, width))
    if not out:
        raise InvalidEmbedding("the embedding holds no vectors (only a placeholder token id)")
    return out


def _count_width(key: str, spec: TensorSpec) -> tuple[int, int]:
    shape = spec.shape
    if len(shape) not in (1, 2):
        raise InvalidEmbedding(f"'{key}' has shape {list(shape)}; a token embedding is [width] or "
                               "[vectors, width]")
    count, width = (1, shape[0]) if len(shape) == 1 else shape
    if count == 0 or width == 0:
        raise InvalidEmbedding(f"'{key}' has shape {list(shape)}: zero vectors, nothing a prompt could use")
    if width not in WIDTHS:
        raise InvalidEmbedding(f"'{key}' has vectors {width} wide; no text encoder has that width (CLIP ViT-L "
                               "768, OpenCLIP ViT-H 1024, OpenCLIP ViT-bigG 1280)")
    if count > _MAX_VECTORS:
        raise InvalidEmbedding(f"'{key}' holds {count} vectors; a prompt has room for at most {_MAX_VECTORS}")
    if spec.dtype not in ("F16", "BF16", "F32", "F64"):
        raise InvalidEmbedding(f"'{key}' is {spec.dtype}; token vectors are floating point")
    return count, width


def family_of(vectors: list[Vectors]) -> tuple[str, str]:
    """(family, evidence) from the widths: 768 = SD1's CLIP-L, 1024 = SD2's OpenCLIP-H, 768+1280 = SDXL."""
    widths = {v.width for v in vectors}
    if any(v.encoder == "text_encoder_2" for v in vectors) or 1280 in widths:
        return "sdxl", "shapes: " + " + ".join(f"{w} ({WIDTHS[w]})" for w in sorted(widths)) + ", SDXL's encoders"
    if widths == {768}:
        return "sd1", "shapes: width 768 (CLIP ViT-L, SD1.x's text encoder)"
    if widths == {1024}:
        return "sd2", "shapes: width 1024 (OpenCLIP ViT-H, SD2.x's text encoder)"
    raise InvalidEmbedding(f"vectors of widths {sorted(widths)} in one file: no base has text encoders of "
                           "both widths")


def tokens_of(raw: RawFile, fmt: str, vectors: list[Vectors], stem: str) -> list[str]:
    """The names a prompt uses: the file's stem for A1111/SDXL files (as A1111 names them), else the keys."""
    if fmt != "diffusers-ti":
        return [stem]
    return [v.key for v in vectors]


def describe_embedding(raw: RawFile, path: Path, *, name: Optional[str] = None) -> tuple[AdapterReport, Layout]:
    """The report of an embedding (``kind: embedding``, ``network: embedding``) and an empty layout.
    ``name``: the file's real name where ``path`` is not it (a Hub cache blob, a staged conversion)."""
    fmt = embedding_layout(raw)
    vectors = vectors_of(raw)
    family, evidence = family_of(vectors)
    stem = _stem(name or path.name)
    tokens = tokens_of(raw, fmt, vectors, stem)
    encoders = sorted({v.encoder for v in vectors})
    dtype = Counter(raw.tensors[v.key].dtype for v in vectors).most_common(1)[0][0]
    count = max(v.count for v in vectors) if fmt != "diffusers-ti" else sum(v.count for v in vectors)
    warnings = list(raw.notes)
    trained = raw.metadata.get("name")
    if trained and trained != stem and fmt == "a1111":
        warnings.append(f"trained as '{trained}' (step {raw.metadata.get('step', '?')}); A1111 prompts it by its "
                        f"file name, '{stem}'")
    report = AdapterReport(
        path=str(path), size=raw.size, container=raw.container, format=fmt, network="embedding",
        family=family, family_evidence=evidence, components=["tokens", *encoders], rank=None, ranks=[],
        alpha=None, dtype=dtype, n_tensors=len(raw.tensors), n_modules=0, tokens=tokens,
        metadata=dict(raw.metadata), warnings=warnings, kind="embedding", vectors=count,
        widths=sorted({v.width for v in vectors}))
    return report, Layout(format=fmt, network="embedding", modules=[], tokens=tokens)


def _stem(name: str) -> str:
    stem = Path(name).name
    for suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)] or stem
    return stem
