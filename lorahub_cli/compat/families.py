"""Which pretrained model each component of a family is, so a name-and-shape fit can be told from a real one.

Families share text encoders: SD1's text encoder is OpenAI CLIP ViT-L/14, and so is the first text encoder
of SDXL, SD3 and Flux. A LoRA on it was trained against the same weights whichever pipeline it came from, so
it really applies. Denoisers are never shared: an SD1 U-Net layer and an SDXL U-Net layer of the same name
and shape (there are many) hold different trained weights, and a delta learned for one is noise on the other.
"""

from __future__ import annotations

from typing import Optional

# family -> component -> the pretrained model that component is
IDENTITIES: dict[str, dict[str, str]] = {
    "sd1": {"unet": "SD1 U-Net", "text_encoder": "CLIP ViT-L"},
    "sd2": {"unet": "SD2 U-Net", "text_encoder": "OpenCLIP ViT-H"},
    "sdxl": {"unet": "SDXL U-Net", "text_encoder": "CLIP ViT-L", "text_encoder_2": "OpenCLIP ViT-bigG"},
    "sd3": {"transformer": "SD3 MMDiT", "text_encoder": "CLIP ViT-L", "text_encoder_2": "OpenCLIP ViT-bigG",
            "text_encoder_3": "T5-XXL"},
    "flux": {"transformer": "Flux DiT", "text_encoder": "CLIP ViT-L", "text_encoder_2": "T5-XXL"},
}
DENOISERS = ("unet", "transformer")


def identity(family: str, component: str) -> Optional[str]:
    return IDENTITIES.get(family, {}).get(component)


def same_model(adapter_family: str, base_family: str, component: str) -> bool:
    """Whether ``component`` is the same pretrained model in both families (True when either is unknown)."""
    if adapter_family == base_family or "unknown" in (adapter_family, base_family):
        return True
    ours, theirs = identity(adapter_family, component), identity(base_family, component)
    return ours is not None and ours == theirs


def same_base_id(card_id: str, base_id: str) -> bool:
    """Two base ids naming the same checkpoint (case, and known repo moves, ignored)."""
    from lorahub_cli.archs import resolve_alias

    a, b = card_id.strip().lower(), base_id.strip().lower()
    if a == b:
        return True
    alias_a, alias_b = resolve_alias(a), resolve_alias(b)
    return alias_a is not None and alias_a == alias_b
