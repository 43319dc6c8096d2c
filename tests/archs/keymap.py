"""Read a generated (or real) adapter's keys back onto a base's layers, one format at a time.

Deliberately written from the formats' descriptions (formats.md, diffusers.md), not by calling the
generators' code, so a fixture that drifts from its format fails here.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from lorahub_cli.archs.fused import flux_layers, sd3_layers
from lorahub_cli.archs.naming import sai_unet_names
from lorahub_cli.archs.positional import cloneofsimo_order

KOHYA_COMPONENTS = {   # prefix -> component, per family alias
    "sd15": {"lora_unet": "unet", "lora_te": "text_encoder"},
    "sd21": {"lora_unet": "unet", "lora_te": "text_encoder"},
    "sdxl": {"lora_unet": "unet", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"},
    "sd3": {"lora_unet": "transformer", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2",
            "lora_te3": "text_encoder_3"},
    "flux": {"lora_unet": "transformer", "lora_te1": "text_encoder", "lora_te3": "text_encoder_2"},
}
_PROC = re.compile(r"^(?:unet\.)?(?P<attn>.+)\.processor\.(?P<leaf>to_q|to_k|to_v|to_out)_lora\.(?P<role>down|up)\.weight$")
_PROC_TE = re.compile(r"^(?P<comp>text_encoder(?:_2)?)\.(?P<attn>.+)\.(?P<leaf>to_q|to_k|to_v|to_out)_lora\."
                      r"(?P<role>down|up)\.weight$")
_TE_LEAF = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_ROLE = {"lora_A.weight": "down", "lora_B.weight": "up", "lora_down.weight": "down", "lora_up.weight": "up",
         "down.weight": "down", "up.weight": "up"}

Layers = Mapping[str, Any]   # name -> Layer or FusedLayer


def group(fmt: str, family: str, keys: list[str], tables: dict[str, Layers], *,
          component: str | None = None) -> dict[tuple[str, str], dict[str, str]]:
    """{(component, layer name): {role: key}}; role is down / up / alpha or a LyCORIS factor name."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    kohya = _kohya_lookup(family, tables) if fmt in ("kohya", "kohya-flux", "kohya-sd3", "loha", "lokr", "locon") else None
    orders = {c: cloneofsimo_order(t) for c, t in tables.items()} if fmt.startswith("cloneofsimo") else {}
    for key in keys:
        comp, name, role = _parse(fmt, key, orders, kohya, component)
        out.setdefault((comp, name), {})[role] = key
    return out


def _parse(fmt: str, key: str, orders: dict[str, list[str]], kohya: dict | None,
           component: str | None) -> tuple[str, str, str]:
    if kohya is not None:
        stem, suffix = key.split(".", 1)
        comp, name = kohya[stem]
        return comp, name, _ROLE.get(suffix, suffix)
    if fmt.startswith("cloneofsimo"):
        comp, index, role = key.split(":")
        return comp, orders[comp][int(index)], role
    if fmt.startswith("attn-procs"):
        if m := _PROC_TE.match(key):
            return m["comp"], f"{m['attn']}.{_TE_LEAF[m['leaf']]}", m["role"]
        m = _PROC.match(key)
        assert m, key
        leaf = "to_out.0" if m["leaf"] == "to_out" else m["leaf"]
        return "unet", f"{m['attn']}.{leaf}", m["role"]
    if fmt == "diffusers-old":
        comp, rest = key.split(".", 1)
        name, role = re.match(r"^(.+)\.(?:lora|lora_linear_layer)\.(down|up)\.weight$", rest).groups()  # type: ignore[union-attr]
        return comp, name, role
    if fmt == "diffusers":
        comp, rest = key.split(".", 1)
    elif fmt == "peft":
        comp, rest = component or "", key.removeprefix("base_model.model.")
    else:  # diffusers-unprefixed
        comp, rest = component or "", key
    name, role = rest.rsplit(".", 2)[0], ".".join(rest.rsplit(".", 2)[1:])
    return comp, name, _ROLE[role]


def _kohya_lookup(family: str, tables: dict[str, Layers]) -> dict[str, tuple[str, str]]:
    """kohya stem -> (component, layer name), built from every spelling kohya uses for that family."""
    lookup = {}
    for prefix, comp in KOHYA_COMPONENTS[family].items():
        if comp not in tables:
            continue
        names = {n: n for n in tables[comp]}
        if comp == "transformer":   # kohya names Flux / SD3 layers as the original checkpoints do
            names.update({n: n for n in (flux_layers if family == "flux" else sd3_layers)(tables[comp])})
        if family == "sdxl" and comp == "unet":
            names.update({sai: n for n, sai in sai_unet_names(tables[comp]).items()})
        for spelled, name in names.items():
            lookup[f"{prefix}_{spelled}".replace(".", "_")] = (comp, name)
    return lookup


def layers_of(family: str, tables: dict[str, Layers]) -> dict[str, Layers]:
    """Per component, its table plus (Flux / SD3 transformer) the fused layers kohya names."""
    out = {}
    for comp, table in tables.items():
        fused = (flux_layers if family == "flux" else sd3_layers)(table) if comp == "transformer" else {}
        out[comp] = {**table, **fused}
    return out
