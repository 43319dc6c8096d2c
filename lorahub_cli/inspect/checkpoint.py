"""A single-file base checkpoint (A1111 / ComfyUI / Civitai layout) identified from its header alone.

``identify(raw)`` reads only names, dtypes and shapes (a safetensors header; a ``.ckpt`` through the weights-only
reader, so an unsafe pickle is refused as usual) and says:

- the family (sd1, sd2, sdxl, sd3, flux, unknown) decided as ``bases.family_of_configs`` decides it for the
  equivalent diffusers folder: the architecture first (SDXL's label embedding, SD3's joint blocks, Flux's
  double/single blocks), then the U-Net's cross-attention width (768 sd1, 1024 sd2);
- variants the keys or shapes tell: inpainting (9 input channels), refiner, v-prediction (a ``v_pred`` key or
  ModelSpec's prediction type), schnell/dev, fp8 storage;
- the components held: unet / transformer, text_encoder(_2/_3), vae.

``archs.single_file.layer_tables`` builds each adaptable component's module table from the same header, so
`check` reads a checkpoint base exactly as it reads the equivalent diffusers folder.
Files that are not a base are refused with a specific code: not-a-checkpoint (a LoRA, an embedding, a VAE
alone), unknown-architecture, missing-component (no denoiser).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

from lorahub_cli.archs import ldm
from lorahub_cli.errors import MissingComponent, NotACheckpoint, UnknownArchitecture
from lorahub_cli.inspect.model import RawFile, TensorSpec

KIND = "checkpoint"
FP8_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ")
_COMFY_TEXT = {"text_encoders.clip_l.": "text_encoder", "text_encoders.clip_g.": "text_encoder_2",
               "text_encoders.t5xxl.": "text_encoder_3"}
_VAE_ROOTS = (ldm.VAE_ROOT, "vae.")
_LORA_MARKS = re.compile(r"(lora_down|lora_up|lora_A|lora_B|\.alpha$|hada_w|lokr_w|\.oft_|lora_te|lora_unet)")
_EMBEDDING_KEYS = ("emb_params", "string_to_param", "string_to_token", "clip_l", "clip_g")
_VAE_ONLY = re.compile(r"^(encoder|decoder|quant_conv|post_quant_conv)\.")


@dataclass
class CheckpointReport:
    """``lora inspect`` of a base checkpoint (``kind: checkpoint``); ``to_dict`` is the JSON object (keys are API)."""

    path: str
    size: int
    container: str
    family: str
    family_evidence: str
    architecture: str                      # ldm-unet | flux | sd3
    variants: list[str]                    # inpainting, refiner, v-prediction, dev, schnell, fp8, ema
    components: list[str]                  # unet | transformer, text_encoder(_2/_3), vae
    dtype: Optional[str]
    fp8: bool
    n_tensors: int
    kind: str = KIND
    sha256: Optional[str] = None
    autov2: Optional[str] = None
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- what the file is --------------------------------------------------------------------------------------
def identify(raw: RawFile) -> CheckpointReport:
    """What base checkpoint ``raw`` is; raises NotACheckpoint, UnknownArchitecture or MissingComponent."""
    found = ldm.architecture_of(raw.tensors)
    if found is None:
        raise not_a_base(raw)
    arch, root = found
    components = present_components(raw.tensors, arch, root)
    family, evidence, variants = _family(raw, arch, root)
    dtype = _dtype(raw.tensors, root)
    fp8 = dtype in FP8_DTYPES
    if fp8:
        variants.append("fp8")
    if any(k.startswith("model_ema.") for k in raw.tensors):
        variants.append("ema")
    warnings = list(raw.notes)
    if family == "unknown":
        warnings.append("the denoiser's shapes match no published family; its own layer tables are used")
    return CheckpointReport(path=str(raw.path), size=raw.size, container=raw.container, family=family,
                            family_evidence=evidence, architecture=arch, variants=variants, components=components,
                            dtype=dtype, fp8=fp8, n_tensors=len(raw.tensors), metadata=dict(raw.metadata),
                            warnings=warnings)


def looks_like_checkpoint(raw: RawFile) -> bool:
    """True when the keys hold a known denoiser (inspect then reports a checkpoint, not a LoRA verdict)."""
    return ldm.architecture_of(raw.tensors) is not None


def present_components(tensors: dict[str, TensorSpec], arch: str, root: str) -> list[str]:
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in tensors)

    out = ["unet" if arch == "ldm-unet" else "transformer"]
    if arch == "ldm-unet":
        if has(ldm.SD1_TEXT_ROOT) or has(ldm.SD2_TEXT_ROOT) or has(ldm.SDXL_TEXT_ROOT):
            out.append("text_encoder")
        if has(ldm.SDXL_TEXT2_ROOT) or has(ldm.REFINER_TEXT2_ROOT):
            out.append("text_encoder_2")
    else:
        texts = {c for prefix, c in _COMFY_TEXT.items() if has(prefix)}
        if arch == "flux" and "text_encoder_3" in texts:   # Flux's T5 is its text_encoder_2
            texts = (texts - {"text_encoder_3"}) | {"text_encoder_2"}
        out += sorted(texts)
    if any(has(r) for r in _VAE_ROOTS):
        out.append("vae")
    return out


def _family(raw: RawFile, arch: str, root: str) -> tuple[str, str, list[str]]:
    tensors, variants = raw.tensors, []
    if arch == "flux":
        dev = any(k.startswith(root + "guidance_in.") for k in tensors)
        variants.append("dev" if dev else "schnell")
        img_in = tensors.get(root + "img_in.weight")
        if img_in is not None and len(img_in.shape) == 2 and img_in.shape[1] > 64:
            variants.append("fill" if img_in.shape[1] == 384 else "extra-input-channels")
        return "flux", "architecture: BFL double/single blocks", variants
    if arch == "sd3":
        if any(".x_block.attn2." in k for k in tensors):
            variants.append("3.5-medium")
        return "sd3", "architecture: MMDiT joint blocks", variants
    conv_in = tensors.get(root + "input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in.shape) == 4 and conv_in.shape[1] == 9:
        variants.append("inpainting")
    if _v_prediction(raw):
        variants.append("v-prediction")
    if any(k.startswith(root + "label_emb.") for k in tensors):
        if any(k.startswith(ldm.REFINER_TEXT2_ROOT) for k in tensors) and \
                not any(k.startswith(ldm.SDXL_TEXT_ROOT) for k in tensors):
            variants.append("refiner")
        return "sdxl", "architecture: U-Net with a label (size/crop) embedding", variants
    width = _context_width(tensors, root)
    family = {768: "sd1", 1024: "sd2"}.get(width or 0, "unknown")
    return family, f"shapes: cross-attention reads {width}-wide text features" if width else "shapes", variants


def _context_width(tensors: dict[str, TensorSpec], root: str) -> Optional[int]:
    for key, spec in tensors.items():
        if key.startswith(root) and key.endswith(".attn2.to_k.weight") and len(spec.shape) == 2:
            return spec.shape[1]
    return None


def _v_prediction(raw: RawFile) -> bool:
    if "v_pred" in raw.tensors:   # kohya / ComfyUI mark a v-prediction model with an empty "v_pred" tensor
        return True
    return raw.metadata.get("modelspec.prediction_type", "").lower() in ("v", "v_prediction", "v-prediction")


def _dtype(tensors: dict[str, TensorSpec], root: str) -> Optional[str]:
    """The denoiser's storage dtype, by count of its weight tensors."""
    counts = Counter(s.dtype for k, s in tensors.items() if k.startswith(root) and k.endswith(".weight"))
    return counts.most_common(1)[0][0] if counts else None


def not_a_base(raw: RawFile) -> Exception:
    keys = list(raw.tensors)
    if not keys:
        return NotACheckpoint("the file holds no tensors, so it is no base model")
    if sum(bool(_LORA_MARKS.search(k)) for k in keys) * 2 >= len(keys):
        return NotACheckpoint(f"this is a LoRA ({len(keys)} adapter tensors), not a base model",
                              hint="Use it as an adapter: `lora add FILE`, then `-a NAME` with a real --base.")
    if any(k in _EMBEDDING_KEYS or k.startswith("string_to_") for k in keys) and len(keys) <= 8:
        return NotACheckpoint("this is a textual-inversion embedding, not a base model",
                              hint="Use it as an embedding (`lora add FILE`), with a real --base.")
    if all(_VAE_ONLY.match(k) or k.startswith(_VAE_ROOTS) for k in keys):
        return NotACheckpoint("this file holds a VAE only (encoder/decoder), not a base model",
                              hint="Pass it as --vae beside a base checkpoint or folder.")
    texts = [r for r in (ldm.SD1_TEXT_ROOT, ldm.SD2_TEXT_ROOT, ldm.SDXL_TEXT_ROOT, *_COMFY_TEXT)
             if any(k.startswith(r) for k in keys)]
    if texts:
        return MissingComponent(f"the file holds text encoders ({', '.join(texts)}) but no U-Net or transformer",
                                hint="A base needs its denoiser: pass the full checkpoint or a diffusers folder.")
    shown = ", ".join(keys[:3])
    return UnknownArchitecture(f"{len(keys)} tensors ({shown}, ...) match no checkpoint layout lora knows "
                               "(SD1.x/2.x, SDXL, SD3, Flux)")
