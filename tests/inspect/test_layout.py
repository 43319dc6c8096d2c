"""Key layout detection on hand-written key sets with the real module names and shapes of each base.

The key-set builders below are reused by test_family.py. Names and widths follow formats.md §2 and
diffusers.md §2 (SD1/SD2: attention at 320/640/1280 channels, context 768/1024; SDXL: attention at
640/1280 only, 2/10 transformer blocks, context 2048; Flux: hidden 3072; SD3: hidden 64*depth).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pytest

from lorahub_cli.errors import NotALora, NotDiffusion, TextualInversion
from lorahub_cli.inspect.layout import detect_layout, split_key
from lorahub_cli.inspect.model import RawFile, TensorSpec

Shape = tuple[int, ...]
Module = tuple[str, int, int]          # (diffusers dotted path, in_features, out_features)

# --------------------------------------------------------------------------------------------------
# Real module tables
# --------------------------------------------------------------------------------------------------

UNET_CONTEXT = {"sd1": 768, "sd2": 1024, "sdxl": 2048}


def _unet_transformers(family: str) -> list[tuple[str, int, int]]:
    """(attention block path, channels, number of transformer blocks) of each family's UNet."""
    if family in ("sd1", "sd2"):
        down = [(f"down_blocks.{b}.attentions.{a}", c, 1) for b, c in enumerate((320, 640, 1280)) for a in (0, 1)]
        mid = [("mid_block.attentions.0", 1280, 1)]
        up = [(f"up_blocks.{b}.attentions.{a}", c, 1) for b, c in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2)]
        return down + mid + up
    down = [(f"down_blocks.{b}.attentions.{a}", c, n) for b, c, n in ((1, 640, 2), (2, 1280, 10)) for a in (0, 1)]
    mid = [("mid_block.attentions.0", 1280, 10)]
    up = [(f"up_blocks.{b}.attentions.{a}", c, n) for b, c, n in ((0, 1280, 10), (1, 640, 2)) for a in (0, 1, 2)]
    return down + mid + up


def unet_attention_modules(family: str, *, ff: bool = True, only: Optional[Iterable[str]] = None) -> list[Module]:
    """Attention-layer LoRA targets of a real SD1/SD2/SDXL UNet (diffusers names)."""
    ctx = UNET_CONTEXT[family]
    out: list[Module] = []
    for block, c, n_blocks in _unet_transformers(family):
        for t in range(n_blocks):
            tb = f"{block}.transformer_blocks.{t}"
            out += [(f"{tb}.attn1.{p}", c, c) for p in ("to_q", "to_k", "to_v", "to_out.0")]
            out += [(f"{tb}.attn2.to_q", c, c), (f"{tb}.attn2.to_k", ctx, c), (f"{tb}.attn2.to_v", ctx, c),
                    (f"{tb}.attn2.to_out.0", c, c)]
            if ff:
                out += [(f"{tb}.ff.net.0.proj", c, 8 * c), (f"{tb}.ff.net.2", 4 * c, c)]
    if only is not None:
        wanted = tuple(only)
        out = [m for m in out if m[0].endswith(wanted)]
    return out


SDXL_SGM_BLOCKS = {"down_blocks.1.attentions.0": "input_blocks.4.1", "down_blocks.1.attentions.1": "input_blocks.5.1",
                   "down_blocks.2.attentions.0": "input_blocks.7.1", "down_blocks.2.attentions.1": "input_blocks.8.1",
                   "mid_block.attentions.0": "middle_block.1",
                   **{f"up_blocks.0.attentions.{a}": f"output_blocks.{a}.1" for a in range(3)},
                   **{f"up_blocks.1.attentions.{a}": f"output_blocks.{3 + a}.1" for a in range(3)}}


def to_sgm(modules: list[Module]) -> list[Module]:
    """SDXL diffusers names -> SAI/LDM names (what kohya's SDXL trainer writes)."""
    out = []
    for path, i, o in modules:
        for diffusers, sgm in SDXL_SGM_BLOCKS.items():
            if path.startswith(diffusers + "."):
                path = sgm + path[len(diffusers):]
        out.append((path, i, o))
    return out


def clip_text_modules(width: int, layers: int, *, only: Optional[Iterable[str]] = None) -> list[Module]:
    """CLIP text encoder targets (transformers names): q/k/v/out_proj and the MLP."""
    out: list[Module] = []
    for i in range(layers):
        base = f"text_model.encoder.layers.{i}"
        out += [(f"{base}.self_attn.{p}_proj", width, width) for p in "qkvo"[:3]]
        out += [(f"{base}.self_attn.out_proj", width, width), (f"{base}.mlp.fc1", width, 4 * width),
                (f"{base}.mlp.fc2", 4 * width, width)]
    if only is not None:
        wanted = tuple(only)
        out = [m for m in out if m[0].endswith(wanted)]
    return out


def t5_modules(layers: int = 2) -> list[Module]:
    return [(f"encoder.block.{i}.layer.0.SelfAttention.{p}", 4096, 4096) for i in range(layers) for p in "qkvo"]


def flux_kohya_modules(double: int = 19, single: int = 38) -> list[Module]:
    """kohya lora_flux targets (formats.md §2.4), dotted so that kohya naming can be applied."""
    out: list[Module] = []
    for i in range(double):
        for s in ("img", "txt"):
            out += [(f"double_blocks.{i}.{s}_attn.qkv", 3072, 9216), (f"double_blocks.{i}.{s}_attn.proj", 3072, 3072),
                    (f"double_blocks.{i}.{s}_mlp.0", 3072, 12288), (f"double_blocks.{i}.{s}_mlp.2", 12288, 3072),
                    (f"double_blocks.{i}.{s}_mod.lin", 3072, 18432)]
    for i in range(single):
        out += [(f"single_blocks.{i}.linear1", 3072, 21504), (f"single_blocks.{i}.linear2", 15360, 3072),
                (f"single_blocks.{i}.modulation.lin", 3072, 9216)]
    return out


def flux_diffusers_modules(double: int = 19, single: int = 38) -> list[Module]:
    out: list[Module] = []
    for i in range(double):
        tb = f"transformer_blocks.{i}"
        out += [(f"{tb}.attn.{p}", 3072, 3072) for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj",
                                                        "add_k_proj", "add_v_proj", "to_add_out")]
        out += [(f"{tb}.ff.net.0.proj", 3072, 12288), (f"{tb}.ff.net.2", 12288, 3072)]
    for i in range(single):
        sb = f"single_transformer_blocks.{i}"
        out += [(f"{sb}.attn.{p}", 3072, 3072) for p in ("to_q", "to_k", "to_v")]
        out += [(f"{sb}.proj_mlp", 3072, 12288), (f"{sb}.proj_out", 15360, 3072)]
    return out


def sd3_kohya_modules(depth: int = 24) -> list[Module]:
    hidden = 64 * depth
    out: list[Module] = []
    for i in range(depth):
        for part in ("x_block", "context_block"):
            b = f"joint_blocks.{i}.{part}"
            out += [(f"{b}.attn.qkv", hidden, 3 * hidden), (f"{b}.attn.proj", hidden, hidden),
                    (f"{b}.mlp.fc1", hidden, 4 * hidden), (f"{b}.mlp.fc2", 4 * hidden, hidden),
                    (f"{b}.adaLN_modulation.1", hidden, 6 * hidden)]
    return out


def sd3_diffusers_modules(depth: int = 24) -> list[Module]:
    hidden = 64 * depth
    return [(f"transformer_blocks.{i}.attn.{p}", hidden, hidden) for i in range(depth)
            for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")]


# --------------------------------------------------------------------------------------------------
# Key writers: one per format
# --------------------------------------------------------------------------------------------------

Keys = dict[str, tuple[str, Shape]]


def diffusers_keys(modules: list[Module], prefix: str = "unet.", rank: int = 4, dtype: str = "F16") -> Keys:
    out: Keys = {}
    for path, i, o in modules:
        out[f"{prefix}{path}.lora_A.weight"] = (dtype, (rank, i))
        out[f"{prefix}{path}.lora_B.weight"] = (dtype, (o, rank))
    return out


def diffusers_old_keys(modules: list[Module], prefix: str = "unet.", rank: int = 4) -> Keys:
    out: Keys = {}
    for path, i, o in modules:
        mid = "lora_linear_layer" if prefix.startswith("text_encoder") else "lora"
        out[f"{prefix}{path}.{mid}.down.weight"] = ("F32", (rank, i))
        out[f"{prefix}{path}.{mid}.up.weight"] = ("F32", (o, rank))
    return out


def attn_procs_keys(modules: list[Module], prefix: str = "", rank: int = 4) -> Keys:
    out: Keys = {}
    for path, i, o in modules:
        block, proj = path.rsplit(".attn", 1)[0], path.split(".attn", 1)[1]
        attn, leaf = proj.split(".", 1)
        leaf = "to_out" if leaf == "to_out.0" else leaf
        stem = f"{prefix}{block}.attn{attn}.processor.{leaf}_lora"
        out[f"{stem}.down.weight"] = ("F32", (rank, i))
        out[f"{stem}.up.weight"] = ("F32", (o, rank))
    return out


def kohya_keys(modules: list[Module], prefix: str = "lora_unet", rank: int = 8, alpha: bool = True,
               conv4d: Iterable[str] = ()) -> Keys:
    out: Keys = {}
    conv4d = tuple(conv4d)
    for path, i, o in modules:
        stem = f"{prefix}_{path}".replace(".", "_")
        four = path.endswith(conv4d) if conv4d else False
        out[f"{stem}.lora_down.weight"] = ("F16", (rank, i, 1, 1) if four else (rank, i))
        out[f"{stem}.lora_up.weight"] = ("F16", (o, rank, 1, 1) if four else (o, rank))
        if alpha:
            out[f"{stem}.alpha"] = ("F16", ())
    return out


def cloneofsimo_keys(modules: list[Module], component: str = "unet", rank: int = 4) -> Keys:
    out: Keys = {}
    for n, (_, i, o) in enumerate(modules):
        out[f"{component}:{n}:up"] = ("F16", (o, rank))
        out[f"{component}:{n}:down"] = ("F16", (rank, i))
    return out


def make_raw(keys: Keys, metadata: Optional[dict[str, str]] = None, *, name: str = "adapter.safetensors",
             folder: Optional[Path] = None, values: Optional[dict[str, np.ndarray]] = None,
             container: str = "safetensors") -> RawFile:
    """A RawFile as a container reader would return it; ``values`` backs read_values (alphas)."""
    tensors = {k: TensorSpec(dt, tuple(shape)) for k, (dt, shape) in keys.items()}
    store = values or {}

    def read_values(key: str) -> np.ndarray:
        return np.asarray(store[key], dtype=np.float64)

    path = (folder or Path("/nonexistent-lorahub-test")) / name
    return RawFile(path=path, size=sum(t.nbytes for t in tensors.values()), container=container, tensors=tensors,
                   metadata=dict(metadata or {}), read_values=read_values if store else None)


def read_safetensors_header(path: Path) -> RawFile:
    """Parse a real safetensors file's header (u64 length + JSON) without the project's container reader."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {k: TensorSpec(v["dtype"], tuple(v["shape"]), tuple(v["data_offsets"])) for k, v in header.items()}
    np_dtypes = {"F16": np.float16, "F32": np.float32}

    def read_values(key: str) -> np.ndarray:
        begin, end = tensors[key].offsets
        raw = data[8 + n + begin: 8 + n + end]
        return np.frombuffer(raw, dtype=np_dtypes[tensors[key].dtype]).astype(np.float64)

    return RawFile(path=path, size=len(data), container="safetensors", tensors=tensors, metadata=metadata,
                   data_start=8 + n, read_values=read_values)


def components_of(layout) -> set[str]:
    return {m.component for m in layout.modules}


# --------------------------------------------------------------------------------------------------
# split_key
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, stem, role", [
    ("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", "lora_unet_mid_block_attentions_0_proj_in", "down"),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", "lora_te1_text_model_encoder_layers_0_mlp_fc1", "alpha"),
    ("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight",
     "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q", "up"),
    ("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight",
     "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q", "up"),
    ("mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight",
     "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora", "down"),
    ("text_encoder.text_model.encoder.layers.3.self_attn.k_proj.lora_linear_layer.down.weight",
     "text_encoder.text_model.encoder.layers.3.self_attn.k_proj", "down"),
    ("unet:17:down", "unet:17", "down"),
    ("lora_unet_input_blocks_4_1_proj_in.hada_w2_a", "lora_unet_input_blocks_4_1_proj_in", "hada_w2_a"),
    ("lora_unet_input_blocks_4_1_proj_in.lokr_w1", "lora_unet_input_blocks_4_1_proj_in", "lokr_w1"),
    ("gpt_neox.layers.0.attention.query_key_value.lora_A", "gpt_neox.layers.0.attention.query_key_value", "down"),
])
def test_split_key_finds_stem_and_role(key, stem, role):
    part = split_key(key)
    assert part is not None and (part.stem, part.role) == (stem, role)


@pytest.mark.parametrize("key", ["dummy_weights", "conv1.weight", "<s1>", "bundle_emb.krk.string_to_param.*"])
def test_split_key_leaves_non_adapter_keys(key):
    assert split_key(key) is None


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------

def test_diffusers_prefixed_sdxl_unet_and_both_text_encoders():
    keys = diffusers_keys(unet_attention_modules("sdxl", ff=False), "unet.", rank=16)
    keys |= diffusers_keys(clip_text_modules(768, 12), "text_encoder.", rank=8)
    keys |= diffusers_keys(clip_text_modules(1280, 32), "text_encoder_2.", rank=8)
    layout = detect_layout(make_raw(keys))
    assert (layout.format, layout.network) == ("diffusers", "lora")
    assert components_of(layout) == {"unet", "text_encoder", "text_encoder_2"}
    assert {m.rank for m in layout.modules} == {16, 8}
    # 70 transformer blocks x 8 attention projections, 12 x 6 and 32 x 6 text-encoder layers
    assert len(layout.modules) == 70 * 8 + 12 * 6 + 32 * 6
    to_k = next(m for m in layout.modules if m.key.endswith("mid_block.attentions.0.transformer_blocks.9.attn2.to_k"))
    assert (to_k.in_features, to_k.out_features, to_k.kernel) == (2048, 1280, None)
    assert to_k.up_keys == (to_k.key + ".lora_B.weight",)
    assert set(to_k.tensor_keys) == {to_k.key + ".lora_A.weight", to_k.key + ".lora_B.weight"}


def test_diffusers_unprefixed_unet_is_recognised_by_its_block_names():
    layout = detect_layout(make_raw(diffusers_keys(unet_attention_modules("sd1", only=("to_q", "to_k", "to_v")), "")))
    assert layout.format == "diffusers"
    assert components_of(layout) == {"unet"}
    assert len(layout.modules) == 16 * 6


def test_diffusers_old_unet_and_text_encoder_linear_layer():
    keys = diffusers_old_keys(unet_attention_modules("sd1", ff=False), "unet.")
    keys |= diffusers_old_keys(clip_text_modules(768, 12, only=("q_proj", "k_proj", "v_proj", "out_proj")),
                               "text_encoder.")
    layout = detect_layout(make_raw(keys))
    assert layout.format == "diffusers-old"
    assert components_of(layout) == {"unet", "text_encoder"}
    te = next(m for m in layout.modules if m.component == "text_encoder")
    assert te.up_keys[0].endswith(".lora_linear_layer.up.weight")


@pytest.mark.parametrize("prefix", ["", "unet."])
def test_attn_procs_with_or_without_unet_prefix(prefix):
    layout = detect_layout(make_raw(attn_procs_keys(unet_attention_modules("sd1", ff=False), prefix)))
    assert (layout.format, layout.network) == ("attn-procs", "lora")
    assert components_of(layout) == {"unet"}
    assert len(layout.modules) == 128
    out = next(m for m in layout.modules if m.key.endswith("up_blocks.3.attentions.2.transformer_blocks.0.attn2"
                                                           ".processor.to_out_lora"))
    assert (out.in_features, out.out_features, out.rank) == (320, 320, 4)


def test_peft_text_encoder_adapter_model():
    keys = {f"base_model.model.{k}": v for k, v in
            diffusers_keys(clip_text_modules(768, 12, only=("q_proj", "v_proj")), "", rank=8, dtype="F32").items()}
    layout = detect_layout(make_raw(keys))
    assert (layout.format, layout.network) == ("peft", "lora")
    assert components_of(layout) == {"text_encoder"}
    assert {m.rank for m in layout.modules} == {8}


def test_peft_on_a_unet_and_on_a_dit():
    unet = {f"base_model.model.{k}": v for k, v in diffusers_keys(unet_attention_modules("sd1", ff=False), "").items()}
    dit = {f"base_model.model.{k}": v for k, v in diffusers_keys(sd3_diffusers_modules(2), "").items()}
    assert components_of(detect_layout(make_raw(unet))) == {"unet"}
    layout = detect_layout(make_raw(dit))
    assert layout.format == "peft" and components_of(layout) == {"transformer"}


def test_kohya_sd1_unet_and_text_encoder_with_alpha_and_conv_proj():
    keys = kohya_keys(unet_attention_modules("sd1") + [(f"{b}.proj_in", c, c) for b, c, _ in _unet_transformers("sd1")],
                      conv4d=(".proj_in",))
    keys |= kohya_keys(clip_text_modules(768, 12), "lora_te")
    layout = detect_layout(make_raw(keys))
    # SD1 proj_in is a 1x1 conv: a 4-D LoRA there is still plain LoRA, not LoCon
    assert (layout.format, layout.network) == ("kohya", "lora")
    assert components_of(layout) == {"unet", "text_encoder"}
    assert len(layout.modules) == 16 * 11 + 72
    proj = next(m for m in layout.modules if m.key == "lora_unet_down_blocks_0_attentions_0_proj_in")
    assert proj.kernel == (1, 1) and proj.alpha_key == proj.key + ".alpha"
    assert proj.up_keys == (proj.key + ".lora_up.weight",)


def test_kohya_conv_layers_make_it_locon():
    keys = kohya_keys(unet_attention_modules("sd1", ff=False))
    keys["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] = ("F16", (8, 320, 3, 3))
    keys["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"] = ("F16", (320, 8, 1, 1))
    keys["lora_unet_down_blocks_0_resnets_0_conv1.alpha"] = ("F16", ())
    layout = detect_layout(make_raw(keys))
    assert (layout.format, layout.network) == ("kohya", "locon")
    conv = next(m for m in layout.modules if m.key.endswith("resnets_0_conv1"))
    assert conv.kernel == (3, 3) and conv.in_features == 320


def test_kohya_flux_lora_unet_prefix_is_the_transformer_and_te3_is_t5():
    keys = kohya_keys(flux_kohya_modules(), "lora_unet", rank=32)
    keys |= kohya_keys(clip_text_modules(768, 12), "lora_te1", rank=32)
    keys |= kohya_keys(t5_modules(), "lora_te3", rank=32)
    layout = detect_layout(make_raw(keys))
    assert layout.format == "kohya"
    assert components_of(layout) == {"transformer", "text_encoder", "text_encoder_3"}
    assert sum(m.component == "transformer" for m in layout.modules) == 19 * 10 + 38 * 3


def test_kohya_sd3_joint_blocks_are_the_transformer():
    layout = detect_layout(make_raw(kohya_keys(sd3_kohya_modules(24), rank=16)))
    assert components_of(layout) == {"transformer"}


def test_cloneofsimo_positional_unet_text_encoder_and_pivotal_token():
    unet = unet_attention_modules("sd1", only=("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj"))
    keys = cloneofsimo_keys(unet, "unet") | cloneofsimo_keys(clip_text_modules(768, 12, only=("_proj",)),
                                                              "text_encoder")
    keys["<s1>"] = ("F16", (768,))
    meta = {"unet": '["CrossAttention", "Attention", "GEGLU"]', "text_encoder": '["CLIPAttention"]', "<s1>": "<embed>"}
    layout = detect_layout(make_raw(keys, meta))
    assert (layout.format, layout.network) == ("cloneofsimo", "lora")
    assert components_of(layout) == {"unet", "text_encoder"}
    assert len(layout.modules) == 144 + 48
    assert layout.tokens == ["<s1>"]
    first = next(m for m in layout.modules if m.key == "unet:0")
    assert first.up_keys == ("unet:0:up",) and first.in_features == 320


def test_lycoris_loha_rank_and_zero_check_factor():
    keys: Keys = {}
    for path, i, o in unet_attention_modules("sdxl", ff=False)[:40]:
        stem = "lora_unet_" + path.replace(".", "_")
        keys |= {f"{stem}.hada_w1_a": ("F16", (o, 16)), f"{stem}.hada_w1_b": ("F16", (16, i)),
                 f"{stem}.hada_w2_a": ("F16", (o, 16)), f"{stem}.hada_w2_b": ("F16", (16, i)),
                 f"{stem}.alpha": ("F16", ())}
    layout = detect_layout(make_raw(keys))
    assert (layout.format, layout.network) == ("lycoris", "loha")
    m = layout.modules[0]
    assert m.rank == 16 and m.up_keys == (m.key + ".hada_w2_a",)
    assert (m.in_features, m.out_features) == (640, 640)


def test_lycoris_lokr_full_and_low_rank_factors():
    keys = {
        # 640 = 8 x 80; w2 as a rank-4 pair
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lokr_w1": ("F16", (8, 8)),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lokr_w2_a": ("F16", (80, 4)),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lokr_w2_b": ("F16", (4, 80)),
        # both factors full: no rank
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w1": ("F16", (8, 8)),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w2": ("F16", (80, 80)),
    }
    layout = detect_layout(make_raw(keys))
    assert (layout.format, layout.network) == ("lycoris", "lokr")
    q, k = sorted(layout.modules, key=lambda m: m.key, reverse=True)
    assert (q.rank, q.in_features, q.out_features) == (4, 640, 640)
    assert q.up_keys == (q.key + ".lokr_w2_b",)
    assert k.rank == 0 and k.up_keys == (k.key + ".lokr_w2",)


def test_dora_from_peft_magnitude_and_from_kohya_dora_scale():
    peft = diffusers_keys(flux_diffusers_modules(1, 1), "transformer.")
    peft |= {k.replace("lora_A.weight", "lora_magnitude_vector"): ("F16", (3072,))
             for k in peft if k.endswith("lora_A.weight")}
    assert detect_layout(make_raw(peft)).network == "dora"
    kohya = kohya_keys(unet_attention_modules("sd1", ff=False))
    kohya |= {k.replace(".alpha", ".dora_scale"): ("F16", (320, 1)) for k in kohya if k.endswith(".alpha")}
    layout = detect_layout(make_raw(kohya))
    assert (layout.format, layout.network) == ("kohya", "dora")


def test_a1111_bundled_embedding_is_a_token_not_a_module():
    keys = kohya_keys(unet_attention_modules("sd1", ff=False))
    keys["bundle_emb.mychar.string_to_param.*"] = ("F32", (2, 768))
    layout = detect_layout(make_raw(keys))
    assert layout.tokens == ["mychar"]
    assert layout.format == "kohya"


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------

def test_single_token_embedding_is_textual_inversion():
    with pytest.raises(TextualInversion) as err:
        detect_layout(make_raw({"<krk>": ("F32", (768,))}, container="pickle"))
    assert err.value.code == "textual-inversion"
    assert "<krk>" in err.value.message and "768" in err.value.message


@pytest.mark.parametrize("keys", [
    {"string_to_param.*": ("F32", (4, 768)), "string_to_token.*": ("I64", ())},     # A1111 .pt
    {"emb_params": ("F32", (2, 1024))},                                             # A1111 .safetensors
    {"clip_l": ("F16", (2, 768)), "clip_g": ("F16", (2, 1280))},                    # SDXL embedding
])
def test_embedding_layouts_are_textual_inversion(keys):
    with pytest.raises(TextualInversion):
        detect_layout(make_raw(keys))


def test_loralib_gpt_neox_lora_is_not_diffusion():
    # NEG_hyunwoo_llm_lora.pth: MergedLinear on fused qkv, lora_A [8, 2048], lora_B [4096, 4]
    keys: Keys = {}
    for i in range(24):
        keys[f"gpt_neox.layers.{i}.attention.query_key_value.lora_A"] = ("F32", (8, 2048))
        keys[f"gpt_neox.layers.{i}.attention.query_key_value.lora_B"] = ("F32", (4096, 4))
    with pytest.raises(NotDiffusion) as err:
        detect_layout(make_raw(keys, container="pickle"))
    assert err.value.code == "not-diffusion"
    assert "48" in err.value.message and "gpt_neox.layers" in err.value.message


def test_llama_peft_adapter_is_not_diffusion():
    keys: Keys = {}
    for i in range(4):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            keys[f"base_model.model.model.layers.{i}.self_attn.{p}.lora_A.weight"] = ("BF16", (16, 4096))
            keys[f"base_model.model.model.layers.{i}.self_attn.{p}.lora_B.weight"] = ("BF16", (4096, 16))
    with pytest.raises(NotDiffusion) as err:
        detect_layout(make_raw(keys))
    assert "model.layers" in err.value.message


def test_gpt2_under_transformer_prefix_is_not_a_dit():
    keys: Keys = {}
    for i in range(2):
        keys[f"transformer.h.{i}.attn.c_attn.lora_A.weight"] = ("F32", (8, 768))
        keys[f"transformer.h.{i}.attn.c_attn.lora_B.weight"] = ("F32", (2304, 8))
    with pytest.raises(NotDiffusion, match="GPT-2"):
        detect_layout(make_raw(keys))


def test_lora_on_unrecognised_layers_is_not_diffusion():
    keys = {"backbone.stage1.fc.lora_A.weight": ("F32", (4, 512)), "backbone.stage1.fc.lora_B.weight": ("F32", (10, 4))}
    with pytest.raises(NotDiffusion) as err:
        detect_layout(make_raw(keys))
    assert "backbone.stage1.fc" in err.value.message


@pytest.mark.parametrize("keys, shown", [
    ({"dummy_weights": ("F32", (100, 100))}, "dummy_weights"),
    ({"conv1.weight": ("F32", (64, 3, 7, 7)), "bn1.weight": ("F32", (64,)), "fc.weight": ("F32", (1000, 512))},
     "conv1.weight"),
])
def test_plain_weights_are_not_a_lora(keys, shown):
    with pytest.raises(NotALora) as err:
        detect_layout(make_raw(keys))
    assert err.value.code == "not-a-lora"
    assert shown in err.value.message and str(len(keys)) in err.value.message


def test_no_tensors_is_not_a_lora():
    with pytest.raises(NotALora, match="no tensors"):
        detect_layout(make_raw({}))


def test_downs_without_ups_are_not_a_lora():
    keys = {k: v for k, v in kohya_keys(unet_attention_modules("sd1", ff=False)).items() if "lora_up" not in k}
    with pytest.raises(NotALora, match="only a down"):
        detect_layout(make_raw(keys))


_STEM = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"


@pytest.mark.parametrize("factors", [
    {"hada_w1_a": (), "hada_w1_b": (), "hada_w2_a": (), "hada_w2_b": ()},
    {"hada_w1_a": (640, 4), "hada_w1_b": (4,), "hada_w2_a": (640, 4), "hada_w2_b": (4, 640)},
    {"lokr_w1": (8,), "lokr_w2": (80,)},
    {"lokr_w1": (8, 8), "lokr_w2": (80, 80), "lokr_w2_b": ()},
    {"a1.weight": (), "a2.weight": (4, 640)},
])
def test_factors_that_are_not_matrices_are_an_incomplete_module(factors):
    """Scalar or vector LyCORIS factors: refused as not-a-lora, never an IndexError."""
    keys = {f"{_STEM}.{role}": ("F16", shape) for role, shape in factors.items()}
    with pytest.raises(NotALora, match="not matrices"):
        detect_layout(make_raw(keys))


def test_stray_keys_are_listed_not_fatal():
    keys = kohya_keys(unet_attention_modules("sd1", ff=False))
    keys["some_extra_buffer"] = ("F32", (3,))
    layout = detect_layout(make_raw(keys))
    assert layout.unknown_keys == ["some_extra_buffer"]
    assert len(layout.modules) == 128


def test_kohya_oft_blocks():
    keys: Keys = {}
    for path, _, c in unet_attention_modules("sdxl", ff=False, only=(".attn1.to_q",))[:4]:
        stem = "oft_unet_" + path.replace(".", "_")
        keys[f"{stem}.oft_blocks"] = ("F32", (4, c // 4, c // 4))
        keys[f"{stem}.alpha"] = ("F32", ())
    layout = detect_layout(make_raw(keys))
    assert (layout.format, layout.network) == ("lycoris", "oft")
    assert components_of(layout) == {"unet"}
