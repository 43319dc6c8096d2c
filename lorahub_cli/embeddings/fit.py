"""Whether an embedding fits a base: by the width of each of its vector tensors against the token-embedding
width (``hidden_size``) of the base's text encoders, read from their config.json (never weights).

A vector tensor for a named SDXL encoder (``clip_l``/``clip_g``, ``text_encoders_0/1``) must fit that encoder;
any other fits whichever encoder has its width (diffusers loads a 768-wide vector into SDXL's CLIP-L).
All fit: compatible; some: partial (the other encoder gets no vector); none: incompatible, widths named.
Token names that are words of the base's vocabulary (when its folder has a tokenizer) are collisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorahub_cli.inspect.embedding import Vectors

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class VectorFit:
    vectors: Vectors
    target: Optional[str]         # the base's encoder it loads into, None when none has its width


@dataclass
class EmbeddingFit:
    fits: list[VectorFit]
    base_widths: dict[str, int]   # encoder -> width
    collisions: dict[str, str] = field(default_factory=dict)   # token -> suggested new name

    @property
    def verdict(self) -> str:
        matched = sum(1 for f in self.fits if f.target)
        unused = [e for e in self.base_widths if e not in {f.target for f in self.fits}]
        if matched == 0:
            return "incompatible"
        return "compatible" if matched == len(self.fits) and not unused else "partial"

    def summary(self) -> str:
        widths = ", ".join(f"{e} {w}" for e, w in self.base_widths.items()) or "no text encoder"
        mine = " + ".join(str(f.vectors.width) for f in self.fits)
        matched = [f for f in self.fits if f.target]
        if not matched:
            return f"vectors {mine} wide; the base's text encoders are {widths}: none takes them"
        unused = [e for e in self.base_widths if e not in {f.target for f in matched}]
        missing = [f.vectors.key for f in self.fits if not f.target]
        parts = [f"{f.vectors.key} ({f.vectors.width}) -> {f.target}" for f in matched]
        if missing:
            parts.append(f"no encoder of the base takes {', '.join(missing)}")
        if unused:
            parts.append(f"{', '.join(unused)} gets no vector (the embedding was made for another base)")
        return "; ".join(parts)


def encoder_widths(folder: Path) -> dict[str, int]:
    """encoder -> token-embedding width, for the text encoders the base's folder has configs for."""
    out = {}
    for encoder in TEXT_ENCODERS:
        config = Path(folder) / encoder / "config.json"
        if config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            data = data.get("text_config", data)   # a combined CLIP config keeps the text part apart
            if "hidden_size" in data:
                out[encoder] = int(data["hidden_size"])
    return out


def fit(vectors: list[Vectors], folder: Path, tokens: list[str] = ()) -> EmbeddingFit:
    """How ``vectors`` load into the base whose configs are in ``folder``."""
    widths = encoder_widths(folder)
    named = any(v.encoder == "text_encoder_2" for v in vectors)
    fits = []
    for v in vectors:
        if named:   # an SDXL file says which encoder each tensor is for
            target = v.encoder if widths.get(v.encoder) == v.width else None
        else:
            target = next((e for e, w in widths.items() if w == v.width), None)
        fits.append(VectorFit(v, target))
    return EmbeddingFit(fits, widths, token_collisions(tokens, folder))


def token_collisions(tokens, folder: Optional[Path] = None, vocab: Optional[dict] = None) -> dict[str, str]:
    """token -> a suggested new name, for tokens that are whole words of the base's CLIP vocabulary
    (``word</w>``) or already one of its tokens: every such word in a prompt would become the embedding."""
    if vocab is None:
        path = Path(folder) / "tokenizer" / "vocab.json" if folder is not None else None
        if path is None or not path.is_file():
            return {}
        vocab = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for token in tokens:
        word = token.lower()
        if word in vocab or f"{word}</w>" in vocab:
            out[token] = suggest_name(token, vocab)
    return out


def suggest_name(token: str, vocab: dict) -> str:
    """``<token>``, numbered until it is no word of the vocabulary either."""
    base = f"<{token.strip('<>')}>"
    name, n = base, 1
    while name.lower() in vocab or f"{name.lower()}</w>" in vocab:
        n += 1
        name = f"<{token.strip('<>')}-{n}>"
    return name
