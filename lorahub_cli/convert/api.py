"""``convert_file``: one adapter file -> a new, verified safetensors file in the asked layout.

read (weights-only for pickles) -> map names onto the real architecture -> write the target layout ->
read back and compare bit for bit -> (layouts) read the output as an adapter again and compare every module's
factors and scale with the source's -> rename into place. Nothing is left behind when a step fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from lorahub_cli.canonical import CanonicalAdapter
from lorahub_cli.errors import AlreadyExists, UsageError, VerifyFailed
from lorahub_cli.convert.write import KOHYA_FAMILIES
from lorahub_cli.inspect import ADAPTER_SUFFIXES

TARGETS = ("diffusers", "kohya", "safetensors", "lora")   # safetensors: same key layout, only the container changes
# lora: plain low-rank pairs in the layout the family's UIs load (kohya for SD1/SD2/SDXL, diffusers otherwise)
Progress = Callable[[str], None]                 # called with "reading", "mapping", "writing", "verifying"


@dataclass
class ConversionResult:
    dst: Path
    source: Path
    source_sha256: str
    source_format: str           # the layout vocabulary of ARCHITECTURE.md (attn-procs, kohya, ...)
    source_container: str        # safetensors | pickle
    target: str                  # diffusers | kohya | safetensors
    family: str
    n_modules: int               # adapted layers in the output (a fused Flux/SD3 layer counts once per part)
    n_tensors: int
    dtype: Optional[str] = None
    base_model: Optional[str] = None
    companion: Optional[Path] = None          # cloneofsimo X.text_encoder.pt merged into the output
    companion_sha256: Optional[str] = None
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source_report: Any = field(default=None, repr=False)   # the source's inspection (not in the JSON)
    resize: Optional[dict] = None   # --rank / --sv-*: the criterion and each layer's rank and error left

    def to_dict(self) -> dict:
        out = asdict(replace(self, source_report=None))
        del out["source_report"]
        for key in ("dst", "source", "companion"):
            out[key] = str(out[key]) if out[key] is not None else None
        out["verified"] = True  # a result exists only for a file that passed every check
        return out


def default_output(src: Path, to: str) -> Path:
    """Beside the source: <stem>.diffusers.safetensors, <stem>.kohya.safetensors, or <stem>.safetensors."""
    src = Path(src)
    name = src.name
    for suffix in ADAPTER_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return src.with_name(f"{name}.{to}.safetensors" if to != "safetensors" else f"{name}.safetensors")


def convert_file(src: Path, dst: Path, *, to: str = "diffusers", force: bool = False,
                 progress: Optional[Progress] = None, source_name: Optional[str] = None,
                 expected_sha256: Optional[str] = None, resize: Any = None, base: Any = None) -> ConversionResult:
    """Convert ``src`` into ``dst`` (atomic, verified). Raises a LoraError with a stable code on bad input.

    ``source_name``: the source's real file name where ``src`` is not it (a Hub cache blob), for provenance
    and the ModelSpec title. ``expected_sha256``: the hash recorded for ``src`` (a library entry): bytes that
    no longer match are refused (hash-mismatch). ``resize``: a ``lycoris.lowrank.Criterion``; each layer
    becomes its best LoRA of the rank it chooses, computed from the factors (LoHa/LoKr included). ``base``: a
    resolved ``Base`` the layers are named on; DoRA and (IA)^3 layers become their effective update against its
    weights (``lycoris.against_base``), cut by ``resize``, which they then need."""
    from lorahub_cli.convert.keymap import canonical_tables
    from lorahub_cli.convert.load import read_source, to_canonical
    from lorahub_cli.convert.metadata import output_metadata
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.convert.write import diffusers_layout, kohya_layout, tokens_left_out

    step = progress or (lambda stage: None)
    src, dst = Path(src), Path(dst)
    if to not in TARGETS:
        raise UsageError(f"unknown target layout {to!r}; expected one of {', '.join(TARGETS)}")
    if resize is not None and to == "safetensors":
        raise UsageError("--rank / --sv-* need a target layout (--to lora, kohya or diffusers): --to safetensors "
                         "keeps the tensors as they are")
    if dst.is_dir():
        raise UsageError(f"{dst} is a folder; -o names the output file",
                         hint=f"Pass -o {dst / default_output(src, to).name} to write into it.")
    if dst.resolve() == src.resolve():
        raise UsageError(f"the output would replace the source {src}", hint="Pass -o with another path.")
    if dst.exists() and not force:   # before any work; write_verified checks again at the end
        raise AlreadyExists(f"{dst} exists already", hint="Pass --force to replace it, or -o to write elsewhere.")
    step("reading")
    source = read_source(src, sha256=expected_sha256)
    source.name = source_name
    family = source.report.family
    adapter: Optional[CanonicalAdapter] = None
    resized: Optional[dict] = None
    read_back = None
    if base is not None:
        if to == "safetensors":
            raise UsageError("--base needs a target layout (--to lora, kohya or diffusers)")
        step("mapping")
        adapter, tables, family, resized, read_back = _on_base(source, base, resize)
        if to == "lora":
            to = "kohya" if family in KOHYA_FAMILIES else "diffusers"
        writer = diffusers_layout if to == "diffusers" else kohya_layout
        tensors, entries = writer(adapter, tables)
        n_modules = len(adapter.modules)
    elif to == "safetensors":
        tensors, entries, n_modules = dict(source.tensors), {}, len(source.layout.modules)
    else:
        step("mapping")
        adapter, keymap = to_canonical(source)   # may add warnings to source.warnings (unusable LoraConfigs)
        family = keymap.family
        if resize is not None:
            from lorahub_cli.lycoris.lowrank import truncate_adapter

            adapter, layers = truncate_adapter(adapter, resize)
            resized = {"criterion": resize.describe(), "layers": [r.to_dict() for r in layers]}
        tables = canonical_tables(family)
        if to == "lora":
            to = "kohya" if family in KOHYA_FAMILIES else "diffusers"
        writer = diffusers_layout if to == "diffusers" else kohya_layout
        tensors, entries = writer(adapter, tables)
        n_modules = len(adapter.modules)
    warnings = list(source.warnings)
    note = tokens_left_out(adapter) if adapter is not None else None
    if note:
        warnings.append(note)
    if dst.suffix.lower() != ".safetensors":   # A1111, ComfyUI and diffusers pick the reader by the suffix
        warnings.append(f"{dst.name} holds safetensors data under a {dst.suffix or 'missing'} suffix; most tools "
                        "choose their reader by the name, so call it .safetensors")
    metadata = output_metadata(source, to, family, entries)

    def check(tmp: Path, reloaded: dict) -> None:
        if adapter is not None:
            same_adapter(tmp, reloaded, adapter, read=read_back)

    step("writing")
    metadata = write_verified(dst, tensors, metadata, force=force, check=check, on_verify=lambda: step("verifying"),
                              data_hash=True)
    return ConversionResult(dst=dst, source=src, source_sha256=source.sha256, source_format=source.report.format,
                            source_container=source.report.container, target=to, family=family, n_modules=n_modules,
                            n_tensors=len(tensors), dtype=source.report.dtype, base_model=source.report.base_model,
                            companion=source.companion, companion_sha256=source.companion_sha256,
                            metadata=metadata, warnings=_dedupe(warnings), source_report=source.report,
                            resize=resized)


def _on_base(source: Any, base: Any, resize: Any):
    """(adapter, tables, family, resize report, read-back) of ``source`` named on ``base``, DoRA / (IA)^3 layers
    made plain against its weights; those need ``resize`` (their exact update is a dense matrix)."""
    from lorahub_cli.convert.on_base import read_on_base
    from lorahub_cli.lycoris.against_base import truncate_on_base
    from lorahub_cli.lycoris.based import is_based
    from lorahub_cli.lycoris.lowrank import truncate_adapter

    adapter, tables = read_on_base(source, base)
    if resize is None:
        if any(is_based(p) for p in adapter.modules.values()):
            raise UsageError(f"{source.file_name} is a {source.layout.network} adapter: against the base its "
                             "update is a full matrix per layer, so give the rank of the LoRA to write",
                             hint="Add --rank R (or --sv-fro F / --sv-ratio X with --rank as the cap).")
        resized = None
    else:
        if any(is_based(p) for p in adapter.modules.values()):
            adapter, layers = truncate_on_base(adapter, base, resize)
        else:
            adapter, layers = truncate_adapter(adapter, resize)
        resized = {"criterion": resize.describe(), "layers": [r.to_dict() for r in layers],
                   "against_base": base.id}
    read_back = None
    if base.family == "unknown":   # no family architecture names these layers; the base's own tables do
        from lorahub_cli.convert.on_base import map_onto_base, pairs_from_keymap

        def read_back(written):
            return pairs_from_keymap(written, map_onto_base(written.layout, base), tables)
    return adapter, tables, base.family, resized, read_back


def to_safetensors_for_store(src: Path, staging_dir: Path, *, to: str = "safetensors",
                             progress: Optional[Progress] = None,
                             source_name: Optional[str] = None) -> ConversionResult:
    """For the library: a pickle (or any adapter file) as a verified safetensors file in ``staging_dir``.

    The default keeps the key layout (only the container changes), so the stored blob is the same adapter in a
    safe container; the source's sha256 is in the result and in the header ("lorahub.source_sha256").
    """
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    dst = staging_dir / default_output(Path(src), to).name
    return convert_file(src, dst, to=to, force=True, progress=progress, source_name=source_name)


def same_adapter(path: Path, reloaded: dict, expected: CanonicalAdapter, *, what: str = "the written file",
                 same_family: bool = False, read: Optional[Callable[[Any], CanonicalAdapter]] = None) -> None:
    """Read the written file ``path`` (its tensors ``reloaded``) as an adapter, through its own layout's rules,
    and compare it with ``expected`` module by module: the same names, factors bit for bit, the same scale.
    ``same_family``: the file's own family evidence must also name ``expected.family``. ``read``: how to
    name the file's layers (a ``Source`` -> adapter), when not through ``expected.family``'s architecture."""
    from lorahub_cli.convert.keymap import map_layout
    from lorahub_cli.convert.load import Source, to_canonical
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.inspect.describe import describe

    raw = read_container(path)
    report, layout = describe(raw, path)
    if same_family and report.family != expected.family:
        raise VerifyFailed(f"{what} reads as a {report.family} adapter ({report.family_evidence}), "
                           f"not {expected.family}")
    source = Source(path=path, raw=raw, layout=layout, report=report, tensors=reloaded, sha256="")
    got = read(source) if read is not None else to_canonical(source, map_layout(layout, expected.family))[0]
    same_modules(got, expected, what)


def same_modules(got: CanonicalAdapter, expected: CanonicalAdapter, what: str) -> None:
    """``got`` (a written file read back) has ``expected``'s modules, factors bit for bit and scales."""
    from lorahub_cli.convert.safe_write import same_bits

    if set(got.modules) != set(expected.modules):
        missing = sorted(set(expected.modules) - set(got.modules))
        extra = sorted(set(got.modules) - set(expected.modules))
        raise VerifyFailed(f"{what} reads back as other modules (missing {missing[:3]}, extra {extra[:3]})")
    for name, want in expected.modules.items():
        have = got.modules[name]
        if not (same_bits(have.down, want.down) and same_bits(have.up, want.up)):
            raise VerifyFailed(f"module {name} of {what} reads back with other factors")
        if have.scale != want.scale:
            raise VerifyFailed(f"module {name} of {what} reads back with scale {have.scale}, not {want.scale}")


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
