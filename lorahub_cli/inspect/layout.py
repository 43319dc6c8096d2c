"""Key layout: which adapter format a file uses, which layers it adapts, and with which network.

Works on names, dtypes and shapes only. Every tensor key is split into a module stem and a role
("down", "up", "alpha", "hada_w1_a", ...); stems are grouped into ``ModuleInfo`` records and each
stem is given the pipeline component it adapts. Files that are not usable LoRAs are refused here
with the specific error: textual-inversion embeddings, LoRAs for language models, tensors without
any LoRA structure.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

from lorahub_cli.errors import NotALora, NotDiffusion, TextualInversion
from lorahub_cli.inspect.model import Layout, ModuleInfo, RawFile, TensorSpec

# ---------------------------------------------------------------------------------------------------
# Key -> (stem, role, style)
# ---------------------------------------------------------------------------------------------------

# Suffixes in the order they are tried (longest/most specific first). Style says which family of
# writers uses the suffix; the file's format is decided from the styles of all its keys.
_SUFFIXES: tuple[tuple[str, str, str], ...] = (
    (".lora_down.weight", "down", "kohya"),
    (".lora_up.weight", "up", "kohya"),
    (".lora_mid.weight", "mid", "kohya"),
    (".dora_scale", "magnitude", "kohya"),
    (".lora_A.default.weight", "down", "peft"),
    (".lora_B.default.weight", "up", "peft"),
    (".lora_A.weight", "down", "peft"),
    (".lora_B.weight", "up", "peft"),
    (".lora_B.bias", "up_bias", "peft"),
    (".lora_A", "down", "peft"),            # loralib / some trainers: no ".weight"
    (".lora_B", "up", "peft"),
    (".lora_magnitude_vector.weight", "magnitude", "peft"),
    (".lora_magnitude_vector", "magnitude", "peft"),
    (".lora_linear_layer.down.weight", "down", "old"),
    (".lora_linear_layer.up.weight", "up", "old"),
    (".lora.down.weight", "down", "old"),
    (".lora.up.weight", "up", "old"),
    (".hada_w1_a", "hada_w1_a", "loha"),
    (".hada_w1_b", "hada_w1_b", "loha"),
    (".hada_w2_a", "hada_w2_a", "loha"),
    (".hada_w2_b", "hada_w2_b", "loha"),
    (".hada_t1", "hada_t1", "loha"),
    (".hada_t2", "hada_t2", "loha"),
    (".lokr_w1_a", "lokr_w1_a", "lokr"),
    (".lokr_w1_b", "lokr_w1_b", "lokr"),
    (".lokr_w2_a", "lokr_w2_a", "lokr"),
    (".lokr_w2_b", "lokr_w2_b", "lokr"),
    (".lokr_w1", "lokr_w1", "lokr"),
    (".lokr_w2", "lokr_w2", "lokr"),
    (".lokr_t2", "lokr_t2", "lokr"),
    (".oft_blocks", "oft_blocks", "oft"),
    (".diff_b", "diff_b", "full"),
    (".diff", "diff", "full"),
    (".on_input", "on_input", "ia3"),
    (".a1.weight", "a1", "glora"),
    (".a2.weight", "a2", "glora"),
    (".b1.weight", "b1", "glora"),
    (".b2.weight", "b2", "glora"),
)
# Shared by several styles: it belongs to whatever style the rest of its module has.
_SHARED_SUFFIXES: tuple[tuple[str, str], ...] = ((".alpha", "alpha"), (".rescale", "rescale"))

# attn-procs ("…attn1.processor.to_q_lora.down.weight"), the 2023 interim TE form
# ("…self_attn.to_q_lora.down.weight") and XLabs ("…processor.qkv_lora1.down.weight").
_PROCS_RE = re.compile(r"^(?P<stem>.+_lora\d*)\.(?P<role>down|up)\.weight$")
# cloneofsimo safeloras / the pickled list, as the container reader names it
_POSITIONAL_RE = re.compile(r"^(?P<stem>(?P<comp>unet|text_encoder):\d+):(?P<role>up|down)$")

_LYCORIS_STYLES = ("loha", "lokr", "oft", "full", "glora", "ia3")
# Factors read as [rows, cols, ...] when a module is built: a scalar or vector there is a broken module.
_MATRIX_ROLES = {"down", "up", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w1_a",
                 "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "a1"}
_PRIMARY_ROLES = _MATRIX_ROLES | {"oft_blocks", "diff", "a2", "b1", "b2", "ia3"}


@dataclass(frozen=True)
class _Part:
    stem: str
    role: str
    style: Optional[str]   # None for alpha/rescale (decided by the module's other keys)


# Every suffix starts at a dot, so a key's last one, two or three dotted parts are looked up directly
# (longest first, as the ordered list is tried) instead of testing ~40 suffixes against each key.
_SUFFIX_TABLE: dict[str, tuple[str, Optional[str]]] = {}
for _suffix, _role, _style in _SUFFIXES:
    _SUFFIX_TABLE.setdefault(_suffix, (_role, _style))
for _suffix, _role in _SHARED_SUFFIXES:
    _SUFFIX_TABLE.setdefault(_suffix, (_role, None))
_MAX_SUFFIX_DOTS = max(suffix.count(".") for suffix in _SUFFIX_TABLE)


def ia3_vector(key: str, keys) -> Optional[_Part]:
    """LyCORIS (IA)^3 stores its scaling vector as a bare ``<stem>.weight``: one only beside ``<stem>.on_input``."""
    if key.endswith(".weight") and key[:-len(".weight")] + ".on_input" in keys:
        return _Part(key[:-len(".weight")], "ia3", "ia3")
    return None


def split_key(key: str) -> Optional[_Part]:
    """Split one tensor key into its module stem and role; None when it is not an adapter key."""
    if ":" in key:
        m = _POSITIONAL_RE.match(key)
        if m:
            return _Part(m["stem"], m["role"], "cloneofsimo")
    if "_lora" in key:
        m = _PROCS_RE.match(key)
        if m:
            return _Part(m["stem"], m["role"], "procs")
    cuts, cut = [], len(key)
    for _ in range(_MAX_SUFFIX_DOTS):
        cut = key.rfind(".", 0, cut)
        if cut <= 0:  # no dot left, or a suffix that would leave an empty stem
            break
        cuts.append(cut)
    for cut in reversed(cuts):  # earliest cut = longest suffix first
        found = _SUFFIX_TABLE.get(key[cut:])
        if found is not None:
            return _Part(key[:cut], found[0], found[1])
    return None


# ---------------------------------------------------------------------------------------------------
# Stem -> component
# ---------------------------------------------------------------------------------------------------

# First name segments of the real diffusers / LDM UNet and of the DiT transformers (SD3, Flux, ...)
UNET_ROOTS = ("down_blocks", "mid_block", "up_blocks", "conv_in", "conv_out", "conv_norm_out", "time_embedding",
              "add_embedding", "input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out")
DIT_ROOTS = ("transformer_blocks", "single_transformer_blocks", "joint_blocks", "double_blocks", "single_blocks",
             "x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out", "pos_embed", "img_in",
             "txt_in", "time_in", "vector_in", "guidance_in", "final_layer", "blocks")
_KOHYA_PREFIXES: tuple[tuple[str, Optional[str]], ...] = (
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te3_", "text_encoder_3"),   # T5-XXL (SD3's text_encoder_3; Flux calls it text_encoder_2)
    ("lora_te_", "text_encoder"),
    ("lora_transformer_", "transformer"),
    ("lora_unet_", None),              # UNet, or the DiT for Flux/SD3 (kohya keeps "unet" for ComfyUI)
    ("lora_prior_unet_", "unet"),      # Stable Cascade's prior
    ("oft_unet_", None),               # kohya OFT
    ("lycoris_", None),                # SimpleTuner's LyCORIS names
)
_DOTTED_PREFIXES: tuple[tuple[str, Optional[str]], ...] = (
    ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder_3.", "text_encoder_3"),
    ("text_encoder.", "text_encoder"),
    ("unet.", "unet"),
    ("transformer.", "transformer"),
    ("diffusion_model.", None),
)
_GPT2_ROOT_RE = re.compile(r"^(h\.\d+|wte|wpe|ln_f|word_embeddings)\.")
_CLIP_TEXT_RE = re.compile(r"^(text_model\.)?encoder\.layers\.\d+\.(self_attn|mlp)\.")


def _unet_or_dit(rest: str) -> str:
    """A UNet when the path starts like a UNet's, otherwise a DiT transformer."""
    for root in UNET_ROOTS:
        if rest == root or rest.startswith((root + "_", root + ".")):
            return "unet"
    return "transformer"


def component_of(stem: str, style: str) -> Optional[str]:
    """The pipeline component a module stem adapts, or None when its name is no diffusion-model layer."""
    if style == "cloneofsimo":
        return stem.split(":", 1)[0]
    for prefix, comp in _KOHYA_PREFIXES:
        if stem.startswith(prefix):
            return comp or _unet_or_dit(stem[len(prefix):])
    for prefix, comp in _DOTTED_PREFIXES:
        if stem.startswith(prefix):
            rest = stem[len(prefix):]
            if prefix == "transformer." and _GPT2_ROOT_RE.match(rest):
                return None    # GPT-2/Falcon/Bloom keep their decoder under "transformer." too
            return comp or _unet_or_dit(rest)
    rest = stem[len("base_model.model."):] if stem.startswith("base_model.model.") else stem
    if _CLIP_TEXT_RE.match(rest):
        return "text_encoder"
    root = rest.split(".", 1)[0]
    if "." not in rest:
        return None
    if root in UNET_ROOTS and root != "out":
        return "unet"
    if root in DIT_ROOTS and root != "blocks":
        return "transformer"
    return None


# ---------------------------------------------------------------------------------------------------
# Refusals: what a file without usable LoRA modules is instead
# ---------------------------------------------------------------------------------------------------

# Names of language-model / vision-model layers, for a message that says what was found.
_NON_DIFFUSION_PATTERNS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"(^|\.)gpt_neox\.layers\."), "gpt_neox.layers.*"),
    (re.compile(r"(^|\.)model\.layers\.\d+\."), "model.layers.* (Llama/Mistral-style decoder)"),
    (re.compile(r"(^|\.)transformer\.h\.\d+\."), "transformer.h.* (GPT-2/Falcon-style)"),
    (re.compile(r"(^|\.)(h|layers|layer|blocks)\.\d+\.(self_attn|attention|attn|mlp|feed_forward|self_attention)\."),
     "layers.*.attention"),
    (re.compile(r"(^|\.)encoder\.layer\.\d+\.attention\."), "encoder.layer.*.attention (BERT-style)"),
    (re.compile(r"(^|\.)(lm_head|embed_tokens|word_embeddings|wte)(\.|$)"), "lm_head / embed_tokens"),
    (re.compile(r"(^|\.)(vision_model|visual|vision_tower)\."), "vision_model.*"),
)
# Embedding widths of the text encoders that TI vectors are trained for, with a word for the message.
_TI_WIDTHS = {768: "CLIP ViT-L (SD1.x)", 1024: "OpenCLIP ViT-H (SD2.x)", 1280: "OpenCLIP bigG (SDXL)"}
_TI_KEY_RE = re.compile(r"^(<[^<>]+>|emb_params|clip_l|clip_g|string_to_param(\..*)?|string_to_token(\..*)?|\*)$")


def _describe_spec(name: str, spec: TensorSpec) -> str:
    return f"'{name}' {spec.dtype}[{','.join(map(str, spec.shape))}]"


def _non_diffusion_label(stems: list[str]) -> Optional[str]:
    counts: Counter[str] = Counter()
    for stem in stems:
        for pattern, label in _NON_DIFFUSION_PATTERNS:
            if pattern.search(stem):
                counts[label] += 1
                break
    return counts.most_common(1)[0][0] if counts else None


def _looks_like_textual_inversion(tensors: dict[str, TensorSpec]) -> bool:
    if not tensors:
        return False
    if all(_TI_KEY_RE.match(k) for k in tensors):
        return True
    # an unnamed-but-plausible embedding dict: a few vectors (or token x width matrices) of a TE width
    return len(tensors) <= 8 and all(
        1 <= len(s.shape) <= 2 and s.shape[-1] in _TI_WIDTHS and (len(s.shape) == 1 or s.shape[0] <= 75)
        for s in tensors.values())


def _refuse(raw: RawFile, lora_stems: list[str], lora_keys: list[str], tokens: list[str]) -> None:
    """Raise the specific error for a file in which no module could be attributed to a diffusion model."""
    n = len(raw.tensors)
    if lora_keys:
        label = _non_diffusion_label(lora_stems)
        if label:
            raise NotDiffusion(f"{len(lora_keys)} LoRA tensors named like a language or vision model's layers "
                               f"({label}); no UNet, DiT or CLIP text-encoder layer among them")
        raise NotDiffusion(f"{len(lora_keys)} LoRA tensors on modules that are not UNet, DiT or CLIP "
                           f"text-encoder layers (e.g. '{lora_keys[0]}')")
    if tokens or _looks_like_textual_inversion(raw.tensors):
        name, spec = next(iter(raw.tensors.items()))
        width = _TI_WIDTHS.get(spec.shape[-1] if spec.shape else 0)
        names = tokens or list(raw.tensors)
        raise TextualInversion(
            f"textual-inversion embedding, not a LoRA: {len(names)} token(s) ({', '.join(names[:5])}), "
            f"{_describe_spec(name, spec)}" + (f", width of {width}" if width else ""))
    if n == 0:
        raise NotALora("the file holds no tensors")
    if any(k.endswith(".on_input") for k in raw.tensors):   # LyCORIS (IA)^3 flags, but no vector beside any
        raise NotALora(f"(IA)^3 on_input flags without their scaling vectors (<layer>.weight), {n} tensors: "
                       "nothing to apply")
    examples = ", ".join(_describe_spec(k, s) for k, s in list(raw.tensors.items())[:3])
    raise NotALora(f"{n} tensors, none shaped like a LoRA (no lora_down/lora_up, lora_A/lora_B, hada_* or "
                   f"lokr_* keys): {examples}")


# ---------------------------------------------------------------------------------------------------
# Embedded textual-inversion tokens
# ---------------------------------------------------------------------------------------------------

def _token_of(key: str, spec: TensorSpec, metadata: dict[str, str]) -> Optional[str]:
    """The token name when ``key`` is an embedded TI vector (cloneofsimo "<s1>", A1111 bundle_emb.*)."""
    if metadata and metadata.get(key) == "<embed>":
        return key
    if key[:1] == "<" and re.fullmatch(r"<[^<>]+>", key) and 1 <= len(spec.shape) <= 2:
        return key
    if key.startswith("bundle_emb."):
        return key.split(".")[1]
    return None


# ---------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------

def _kernel(shape: tuple[int, ...]) -> Optional[tuple[int, ...]]:
    return tuple(shape[2:]) if len(shape) == 4 else None


def _build_module(stem: str, component: str, parts: dict[str, str], tensors: dict[str, TensorSpec]
                  ) -> tuple[Optional[ModuleInfo], Optional[str]]:
    """One ModuleInfo from a stem's keys (role -> key); the second value names a defect, if any."""
    shape = {role: tensors[key].shape for role, key in parts.items()}
    keys = tuple(sorted(parts.values()))
    alpha_key = parts.get("alpha")
    rank = 0
    in_f = out_f = None
    kernel = None
    up_keys: tuple[str, ...] = ()
    flat = {role: list(s) for role, s in shape.items() if role in _MATRIX_ROLES and len(s) < 2}
    if flat:
        return None, f"'{stem}' has weights that are not matrices ({', '.join(f'{r} {s}' for r, s in flat.items())})"
    if "down" in shape or "up" in shape:
        down, up = shape.get("down"), shape.get("up")
        if down is None or up is None:
            return None, f"'{stem}' has only {'an up' if down is None else 'a down'} weight"
        rank, in_f, out_f, kernel = down[0], down[1], up[0], _kernel(shape["mid"] if "mid" in shape else down)
        up_keys = (parts["up"],)
    elif "hada_w1_a" in shape:
        # LoHa: dW = (w1_a @ w1_b) * (w2_a @ w2_b); w1_a [out, r], w1_b [r, in]
        if not {"hada_w1_b", "hada_w2_a", "hada_w2_b"} <= shape.keys():
            return None, f"'{stem}' is missing LoHa factors"
        rank, out_f, in_f = shape["hada_w1_b"][0], shape["hada_w1_a"][0], shape["hada_w1_b"][1]
        kernel = _kernel(shape["hada_t1"]) if "hada_t1" in shape else None
        if "hada_t1" in shape:   # Tucker: w1_a is [r, out] (LyCORIS rebuild_tucker), the core holds the kernel
            out_f = shape["hada_w1_a"][1]
        up_keys = (parts["hada_w2_a"],)   # LyCORIS starts w2_a at zero: all-zero w2_a means dW == 0
    elif any(r.startswith("lokr_") for r in shape):
        # LoKr: dW = kron(w1, w2), each factor full or a low-rank pair (a @ b)
        w1 = shape.get("lokr_w1") or _pair_shape(shape.get("lokr_w1_a"), shape.get("lokr_w1_b"))
        w2 = shape.get("lokr_w2") or _pair_shape(shape.get("lokr_w2_a"), shape.get("lokr_w2_b"))
        if "lokr_t2" in shape and "lokr_w2_a" in shape and "lokr_w2_b" in shape:   # Tucker: w2_a [r, b], w2_b [r, d]
            w2 = (shape["lokr_w2_a"][1], shape["lokr_w2_b"][1])
            kernel = _kernel(shape["lokr_t2"])
        else:   # a conv's kernel lives in the second factor (full [b, d, kh, kw] or w2_b [r, d, kh, kw])
            kernel = _kernel(shape.get("lokr_w2") or shape.get("lokr_w2_b") or ())
        if w1 is None or w2 is None:
            return None, f"'{stem}' is missing LoKr factors"
        # rank exists only for a low-rank factor; two full factors have none (reported as 0)
        rank = (shape["lokr_w2_b"][0] if "lokr_w2_b" in shape else shape["lokr_w1_b"][0] if "lokr_w1_b" in shape
                else 0)
        out_f, in_f = w1[0] * w2[0], w1[1] * w2[1]
        up_keys = (parts["lokr_w2"],) if "lokr_w2" in parts else (parts["lokr_w2_b"],)  # LyCORIS zero-inits w2
    elif "oft_blocks" in shape:
        # kohya counts blocks, LyCORIS sizes them: no rank we could report without guessing
        ob = shape["oft_blocks"]
        out_f = ob[0] * ob[-1] if len(ob) == 3 else None
    elif "diff" in shape:
        d = shape["diff"]
        out_f, in_f = (d[0], d[1]) if len(d) >= 2 else (d[0] if d else None, None)
        kernel = _kernel(d)
        up_keys = (parts["diff"],)
    elif "a1" in shape:
        rank, in_f = shape["a1"][0], shape["a1"][1]
    elif "ia3" in shape:
        # (IA)^3: one scale per output row or per input channel, as the on_input value (not its shape) says;
        # both widths stay unknown here and are checked against the layer when the vector is read
        if "on_input" not in shape:
            return None, f"'{stem}' has an (IA)^3 vector without its on_input flag"
        up_keys = (parts["ia3"],)   # LyCORIS starts the vector at zero: an all-zero vector changes nothing
    else:
        return None, f"'{stem}' has only {', '.join(sorted(shape))}"
    return ModuleInfo(key=stem, component=component, rank=int(rank), in_features=in_f, out_features=out_f,
                      kernel=kernel, alpha_key=alpha_key, tensor_keys=keys, up_keys=up_keys), None


def _pair_shape(a: Optional[tuple[int, ...]], b: Optional[tuple[int, ...]]) -> Optional[tuple[int, int]]:
    if a is None or b is None:
        return None
    return (a[0], b[1])


# Conv layers of the UNet (diffusers and LDM names): a plain LoRA on them is what kohya calls LoCon.
_CONV_NAME_RE = re.compile(r"(resnets|downsamplers|upsamplers|in_layers|out_layers|emb_layers|skip_connection"
                           r"|conv_in|conv_out|conv1|conv2|conv_shortcut)|_op$|_conv$")


def _is_conv(module: ModuleInfo) -> bool:
    if module.kernel and any(k > 1 for k in module.kernel):
        return True
    return module.component == "unet" and bool(_CONV_NAME_RE.search(module.key))


def _format_of(styles: Counter[str], stems: list[str]) -> str:
    if any(s in styles for s in _LYCORIS_STYLES):
        return "lycoris"
    style = styles.most_common(1)[0][0]
    if style == "cloneofsimo":
        return "cloneofsimo"
    if style == "procs":
        return "attn-procs"
    if style == "old":
        return "diffusers-old"
    if style == "kohya":
        return "kohya"
    # lora_A/lora_B: PEFT's own save layout keeps "base_model.model."; diffusers strips it
    return "peft" if all(s.startswith("base_model.model.") for s in stems) else "diffusers"


def _network_of(styles: Counter[str], roles: set[str], modules: list[ModuleInfo], fmt: str) -> str:
    for style in ("lokr", "loha", "oft", "glora", "full", "ia3"):
        if style in styles:
            return style
    if "magnitude" in roles:
        return "dora"
    if fmt == "kohya" and any(_is_conv(m) for m in modules):
        return "locon"
    return "lora"


def detect_layout(raw: RawFile) -> Layout:
    """The key layout of ``raw``: format, network, one ModuleInfo per adapted layer, embedded tokens.

    Raises TextualInversion, NotDiffusion or NotALora when the file is not a diffusion-model LoRA.
    """
    return analyse_layout(raw)[0]


def analyse_layout(raw: RawFile) -> tuple[Layout, list[str]]:
    """``detect_layout`` plus remarks worth a warning (incomplete modules, keys that were not understood)."""
    tokens: list[str] = []
    grouped: dict[str, dict[str, str]] = defaultdict(dict)
    styles_of: dict[str, dict[str, int]] = defaultdict(dict)   # stem -> style -> keys (cheaper than a Counter each)
    unknown: list[str] = []
    for key, spec in raw.tensors.items():
        token = _token_of(key, spec, raw.metadata)
        if token is not None:
            if token not in tokens:
                tokens.append(token)
            continue
        part = split_key(key) or ia3_vector(key, raw.tensors)
        if part is None:
            unknown.append(key)
            continue
        grouped[part.stem][part.role] = key
        if part.style:
            counts = styles_of[part.stem]
            counts[part.style] = counts.get(part.style, 0) + 1

    # stems with LoRA-bearing roles, and where each belongs
    lora_stems = [s for s, parts in grouped.items() if parts.keys() & _PRIMARY_ROLES]
    orphan_keys = [k for parts in grouped.values() if not parts.keys() & _PRIMARY_ROLES for k in parts.values()]
    modules: list[ModuleInfo] = []
    undiffusion: list[str] = []
    defects: list[str] = []
    styles: Counter[str] = Counter()
    for stem in lora_stems:
        counts = styles_of[stem]
        style = max(counts, key=counts.__getitem__)   # the most keys; the first seen on a tie, as most_common
        component = component_of(stem, style)
        if component is None:
            undiffusion.append(stem)
            continue
        module, defect = _build_module(stem, component, grouped[stem], raw.tensors)
        if module is None:
            defects.append(defect or stem)
            unknown.extend(grouped[stem].values())
            continue
        modules.append(module)
        styles.update(styles_of[stem])

    ignored_lora = [k for s in undiffusion for k in grouped[s].values()]
    if not modules:
        if defects and not undiffusion:
            raise NotALora(f"LoRA-named keys but no complete module: {'; '.join(defects[:3])}")
        _refuse(raw, undiffusion, ignored_lora, tokens)

    not_understood = set(unknown).union(orphan_keys)   # incomplete modules' keys are in `unknown` too
    roles = {r for m in modules for r in grouped[m.key]}
    fmt = _format_of(styles, [m.key for m in modules])
    network = _network_of(styles, roles, modules, fmt)
    layout = Layout(format=fmt, network=network, modules=modules, tokens=tokens,
                    unknown_keys=sorted(not_understood.union(ignored_lora)))
    remarks = [f"incomplete module: {d}" for d in defects[:5]]
    if len(defects) > 5:
        remarks.append(f"... and {len(defects) - 5} more incomplete modules")
    if ignored_lora:
        remarks.append(f"{len(undiffusion)} LoRA modules on layers that are not part of a diffusion model were "
                       f"ignored (e.g. '{undiffusion[0]}')")
    incomplete = {k for s in lora_stems for k in grouped[s].values()}
    stray = sorted(k for k in not_understood if k not in incomplete)
    if stray:
        remarks.append(f"{len(stray)} keys not understood and ignored (e.g. '{stray[0]}')")
    return layout, remarks
