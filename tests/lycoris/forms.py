"""LyCORIS files on real module tables, and float64 dense references written from LyCORIS' definitions.

The references are deliberately the dense formulas (einsum / kron / Hadamard of the full matrices, as
``lycoris/functional`` writes them), independent of the factorised code under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from lorahub_cli.archs import module_table
from lorahub_cli.archs.naming import kohya_name
from tests.fixtures.adapters import FIXTURE_CACHE

# a small, real-shaped subset of SD1.5's U-Net and text encoder: attention linears, 1x1 and 3x3 convs
SD15_LAYERS = (
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),        # 320 -> 320
    ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"),        # 768 -> 640
    ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2"),              # 5120 -> 1280
    ("unet", "down_blocks.0.attentions.0.proj_in"),                                 # 1x1 conv 320
    ("unet", "down_blocks.1.resnets.0.conv1"),                                      # 3x3 conv 320 -> 640
    ("unet", "up_blocks.3.resnets.0.conv_shortcut"),                                # 1x1 conv 640 -> 320
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj"),              # 768 -> 768
)
PREFIX = {"unet": "lora_unet", "text_encoder": "lora_te"}


def layers(family: str = "sd15"):
    """(component, module path, Layer) of the subset."""
    tables = {c: module_table(family, c, cache_dir=FIXTURE_CACHE) for c in ("unet", "text_encoder")}
    return [(c, name, tables[c][name]) for c, name in SD15_LAYERS]


def stem(component: str, name: str) -> str:
    path = name.removeprefix("text_model.") if component == "text_encoder" else name
    return kohya_name(PREFIX[component], path)


def _factor(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 0.1


def _split(n: int) -> tuple[int, int]:
    """LyCORIS' factorization(n, -1): the most balanced a*b = n with a <= b."""
    a = int(n ** 0.5)
    while n % a:
        a -= 1
    return a, n // a


def make_module(form: str, layer, g: torch.Generator, rank: int = 4) -> dict[str, torch.Tensor]:
    """Role -> float64 tensor for one layer in ``form``."""
    out, inp = layer.out_features, layer.in_features
    kernel = tuple(layer.kernel) if layer.kind != "linear" else ()
    conv3 = bool(kernel) and any(k > 1 for k in kernel)
    if form == "loha":
        if conv3:   # Tucker: cores [r, r, kh, kw], w*_a [r, out], w*_b [r, in]
            return {"hada_t1": _factor(g, rank, rank, *kernel), "hada_w1_a": _factor(g, rank, out),
                    "hada_w1_b": _factor(g, rank, inp), "hada_t2": _factor(g, rank, rank, *kernel),
                    "hada_w2_a": _factor(g, rank, out), "hada_w2_b": _factor(g, rank, inp)}
        width = inp * (kernel[0] * kernel[1] if kernel else 1)
        return {"hada_w1_a": _factor(g, out, rank), "hada_w1_b": _factor(g, rank, width),
                "hada_w2_a": _factor(g, out, rank), "hada_w2_b": _factor(g, rank, width)}
    if form.startswith("lokr"):
        (a, b), (c, d) = _split(out), _split(inp)
        w1 = {"lokr_w1_a": _factor(g, a, 2), "lokr_w1_b": _factor(g, 2, c)} if form == "lokr-both" \
            else {"lokr_w1": _factor(g, a, c)}
        if form == "lokr-full":
            return {**w1, "lokr_w2": _factor(g, b, d, *kernel)}
        if conv3:   # Tucker second side: t2 [r, r, kh, kw], w2_a [r, b], w2_b [r, d]
            return {**w1, "lokr_t2": _factor(g, rank, rank, *kernel), "lokr_w2_a": _factor(g, rank, b),
                    "lokr_w2_b": _factor(g, rank, d)}
        return {**w1, "lokr_w2_a": _factor(g, b, rank), "lokr_w2_b": _factor(g, rank, d, *kernel)}
    if form == "locon":   # Tucker LoCon on 3x3 convs, a plain pair elsewhere
        if conv3:
            return {"down": _factor(g, rank, inp, 1, 1), "mid": _factor(g, rank, rank, *kernel),
                    "up": _factor(g, out, rank, 1, 1)}
        return {"down": _factor(g, rank, inp, *kernel), "up": _factor(g, out, rank, *((1, 1) if kernel else ()))}
    if form == "diff":
        return {"diff": _factor(g, out, inp, *kernel)}
    raise ValueError(form)


def reference(roles: dict[str, torch.Tensor], alpha: Optional[float]) -> torch.Tensor:
    """The dense update in float64, from the LyCORIS formulas (flattened to [out, in*kh*kw])."""
    r = {k: v.to(torch.float64) for k, v in roles.items()}

    def tucker(t, wa, wb):
        return torch.einsum("i j ..., i p, j r -> p r ...", t, wa, wb)

    if "hada_w1_a" in r:
        rank = r["hada_w1_b"].shape[0]
        if "hada_t1" in r:
            w1, w2 = tucker(r["hada_t1"], r["hada_w1_a"], r["hada_w1_b"]), tucker(r["hada_t2"], r["hada_w2_a"], r["hada_w2_b"])
        else:
            w1, w2 = r["hada_w1_a"] @ r["hada_w1_b"], r["hada_w2_a"] @ r["hada_w2_b"]
        dense = w1 * w2 * (alpha / rank if alpha is not None else 1.0)
    elif any(k.startswith("lokr") for k in r):
        rank = r["lokr_w1_b"].shape[0] if "lokr_w1_b" in r else r["lokr_w2_b"].shape[0] if "lokr_w2_b" in r else None
        w1 = r["lokr_w1"] if "lokr_w1" in r else r["lokr_w1_a"] @ r["lokr_w1_b"]
        if "lokr_w2" in r:
            w2 = r["lokr_w2"]
        elif "lokr_t2" in r:
            w2 = tucker(r["lokr_t2"], r["lokr_w2_a"], r["lokr_w2_b"])
        else:
            b2 = r["lokr_w2_b"]
            w2 = (r["lokr_w2_a"] @ b2.reshape(b2.shape[0], -1)).reshape(-1, *b2.shape[1:])
        for _ in range(w2.dim() - w1.dim()):
            w1 = w1.unsqueeze(-1)
        dense = torch.kron(w1.contiguous(), w2.contiguous()) * (alpha / rank if alpha is not None and rank else 1.0)
    elif "mid" in r:
        rank = r["down"].shape[0]
        up = r["up"].reshape(r["up"].shape[0], -1).t()
        dense = tucker(r["mid"], up, r["down"].reshape(rank, -1)) * (alpha / rank if alpha is not None else 1.0)
    elif "down" in r:
        rank = r["down"].shape[0]
        dense = r["up"].reshape(r["up"].shape[0], -1) @ r["down"].reshape(rank, -1)
        dense = dense * (alpha / rank if alpha is not None else 1.0)
    else:
        dense = r["diff"]
    return dense.reshape(dense.shape[0], -1)


SUFFIX = {"down": "lora_down.weight", "up": "lora_up.weight", "mid": "lora_mid.weight"}


def write_file(path: Path, form: str, *, rank: int = 4, alpha: Optional[float] = 3.0, seed: int = 0,
               dtype=torch.float32) -> dict[str, tuple[dict[str, torch.Tensor], Optional[float]]]:
    """A LyCORIS file of ``form`` over the subset; returns canonical key -> (roles as stored, alpha)."""
    g = torch.Generator().manual_seed(seed)
    tensors, truth = {}, {}
    for component, name, layer in layers():
        roles = {k: v.to(dtype) for k, v in make_module(form, layer, g, rank).items()}
        a = None if form == "diff" else alpha
        for role, t in roles.items():
            tensors[f"{stem(component, name)}.{SUFFIX.get(role, role)}"] = t.contiguous()
        if a is not None:
            tensors[f"{stem(component, name)}.alpha"] = torch.tensor(a)
        truth[f"{component}.{name}"] = (roles, a)
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sd_v1", "ss_network_module": "lycoris.kohya"})
    return truth


def live_weight(pipe, key):
    """The weight of the pipeline layer ``key`` ("<component>.<name>"; CLIP's "text_model." level optional)."""
    component, name = key.split(".", 1)
    model = getattr(pipe, component)
    try:
        return model.get_submodule(name).weight
    except AttributeError:
        return model.get_submodule(name.removeprefix("text_model.")).weight
