"""The Python API: open the library, build a base pipeline with chosen adapters and weights, generate.

    from lorahub_cli.pipeline import Library

    with Library() as lib:
        pipe = lib.pipeline("sd15", adapters={"pokemon": 0.8, "style": 0.5})   # a diffusers pipeline
        image = pipe("a pikachu", num_inference_steps=25).images[0]
        lib.set_adapters(pipe, {"style": 1.0})                                 # exact undo, then the new set
        shots = lib.generate("a pikachu", base="sd15", adapters={"pokemon": 0.8}, seed=1, output_dir="outputs")
        pipe = lib.pipeline("sd15", embeddings=["easynegative", "my-style:<my-style>"])  # NAME[:TOKEN]

Stacking modes (``stack=``): ``"merge"`` (default) merges the weighted adapters into the weights in fp32 and
keeps the touched originals, so a step costs what the base costs and switching sets is exact; ``"peft"`` loads
them as diffusers / PEFT layers with ``set_adapters`` (base weights untouched, slower steps). ``fuse=True``
merges without keeping originals (less memory; the set cannot change afterwards); ``lora fuse`` saves that.
Embeddings (``embeddings=``, "NAME[:TOKEN]") load through diffusers' ``load_textual_inversion`` once the
adapters are applied, on both SDXL text encoders where the file has both; a pivotal-tuning LoRA's own tokens
load with it. The CLI is a thin client of this module; nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from lorahub_cli.errors import UsageError
from lorahub_cli.pipeline.adapters import AdapterWeights, LoadedAdapter, ResolvedAdapter
from lorahub_cli.pipeline.fuse_file import FuseResult  # noqa: F401  (public here: lorahub_cli.pipeline.FuseResult)
from lorahub_cli.pipeline.generate import GenerateSettings

if TYPE_CHECKING:
    from PIL.Image import Image

    from lorahub_cli.bases import Base
    from lorahub_cli.pipeline.recipe import Recipe
    from lorahub_cli.pipeline.stack import ApplyReport

STACKS = ("merge", "peft")


@dataclass
class PipelineState:
    """What lorahub did to a pipeline; kept on it as ``pipe.lorahub``."""

    base: "Base"
    device: str
    dtype: str                                  # fp16 | bf16 | fp32
    stack: str                                  # merge | peft
    fused: bool
    engine: Any                                 # MergedStack | PeftStack
    adapters: list[LoadedAdapter] = field(default_factory=list)
    report: Optional["ApplyReport"] = None
    warnings: list[str] = field(default_factory=list)
    switch_seconds: float = 0.0                 # the last adapter-set change (restore + merge / load)
    embeddings: list[Any] = field(default_factory=list)   # embeddings.load.ResolvedEmbedding, as loaded
    token_warnings: list[str] = field(default_factory=list)   # from loading them (kept across adapter switches)

    def adapter_recipe(self) -> list[dict[str, Any]]:
        return [a.adapter.to_recipe() for a in self.adapters]

    def embedding_recipe(self) -> list[dict[str, Any]]:
        return [e.to_recipe() for e in self.embeddings if not e.from_adapter]


@dataclass
class Generated:
    image: "Image"
    recipe: "Recipe"
    path: Optional[Path] = None                 # where it was saved (None without output_dir)
    seconds: float = 0.0
    blanked: bool = False                       # the base's safety checker replaced the image

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "seed": self.recipe.seed, "seconds": self.seconds,
                "blanked": self.blanked, "recipe": self.recipe.to_dict()}


_OVERRIDABLE = ("prompt", "negative_prompt", "steps", "guidance", "seed", "size", "scheduler")


@dataclass
class RerunJob:
    recipe: "Recipe"
    base: str
    adapters: list[ResolvedAdapter]
    fuse: bool
    stack: str
    device: str
    dtype: str
    settings: dict[str, Any]                    # generate() keyword arguments, prompt included
    embeddings: list[Any] = field(default_factory=list)   # embeddings.load.ResolvedEmbedding


class Library:
    """The adapter library (``$LORAHUB_HOME`` unless ``home``/``registry`` say otherwise), for pipelines."""

    def __init__(self, home: Optional[Union[str, Path]] = None, *, registry: Any = None):
        self._registry = registry
        self._home = home
        self._own_registry = registry is None
        self._last: Optional[Any] = None        # the pipeline generate() built last, reused when it can be

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from registry.api import Registry

            self._registry = Registry(home=self._home)
        return self._registry

    @property
    def home(self) -> Optional[Path]:
        """The library's home (saved bases are looked up there); None: the default home."""
        if self._registry is not None:
            return Path(self._registry.home)
        return Path(self._home) if self._home is not None else None

    def close(self) -> None:
        if self._own_registry and self._registry is not None:
            self._registry.close()
            self._registry = None
        self._last = None

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- pipelines --------------------------------------------------------------------------------
    def pipeline(self, base: Union[str, "Base"], adapters: AdapterWeights = None, *, fuse: bool = False,
                 stack: str = "merge", device: str = "auto", dtype: str = "auto", embeddings: Any = None) -> Any:
        """A diffusers pipeline of ``base`` with ``adapters`` ({ref: weight} or ["ref:weight"]) applied and
        ``embeddings`` (["NAME[:TOKEN]"] or {name: token}) loaded.

        Every adapter is checked against the base first: incompatible -> ``Incompatible``; partial -> a
        warning in ``pipe.lorahub.warnings`` and only the fitting modules applied. An embedding whose widths
        fit no text encoder of the base is ``Incompatible`` too.
        """
        return self._build(base, self._resolve(adapters), fuse=fuse, stack=stack, device=device, dtype=dtype,
                           embeddings=self._embeddings(embeddings))

    def set_adapters(self, pipe: Any, adapters: AdapterWeights) -> Any:
        """Change the adapters (or just their weights) of a pipeline this library built; the previous set is
        undone exactly first. Returns ``pipe``."""
        self._switch(pipe, self._resolve(adapters))
        return pipe

    def _resolve(self, adapters: Union[AdapterWeights, Sequence[ResolvedAdapter]]) -> list[ResolvedAdapter]:
        from lorahub_cli.pipeline.adapters import parse_specs, resolve

        items = list(adapters) if isinstance(adapters, (list, tuple)) else None
        if items and all(isinstance(a, ResolvedAdapter) for a in items):
            return list(items)   # type: ignore[arg-type]
        specs = parse_specs(adapters)
        return [resolve(s, self.registry) for s in specs] if specs else []

    def _embeddings(self, embeddings: Any) -> list[Any]:
        from lorahub_cli.embeddings.load import ResolvedEmbedding, resolve_embedding, specs_of

        items = list(embeddings) if isinstance(embeddings, (list, tuple)) else None
        if items and all(isinstance(e, ResolvedEmbedding) for e in items):
            return items
        return [resolve_embedding(ref, self.registry, token) for ref, token in specs_of(embeddings)]

    def _build(self, base: Union[str, "Base"], resolved: list[ResolvedAdapter], *, fuse: bool, stack: str,
               device: str, dtype: str, embeddings: Sequence[Any] = ()) -> Any:
        from lorahub_cli.bases import Base, resolve_base
        from lorahub_cli.pipeline.build import choose_device, choose_dtype, dtype_name, load_pipeline

        if stack not in STACKS:
            raise UsageError(f"unknown stack mode {stack!r}; use one of: {', '.join(STACKS)}")
        if fuse and stack == "peft":
            raise UsageError("fuse merges the adapters into the weights; it does not combine with stack='peft'")
        base = base if isinstance(base, Base) else resolve_base(base, home=self.home)
        device = choose_device(device)
        loaded = self._load(resolved, base)              # check every adapter before loading the base
        from lorahub_cli.embeddings.load import check_fits, load_embeddings

        check_fits(embeddings, Path(base.folder))        # and every embedding's widths
        pipe, base = load_pipeline(base, device=device, dtype=dtype)
        pipe.lorahub = PipelineState(base=base, device=device, dtype=dtype_name(choose_dtype(dtype, device)),
                                     stack=stack, fused=fuse, engine=_engine(pipe, stack))
        self._apply(pipe, loaded)
        # a pivotal-tuning LoRA's tokens load with it; then the embeddings asked for
        pipe.lorahub.embeddings = [*_pivotal_tokens(resolved), *embeddings]
        pipe.lorahub.token_warnings = load_embeddings(pipe, pipe.lorahub.embeddings)
        pipe.lorahub.warnings += pipe.lorahub.token_warnings
        return pipe

    def _load(self, resolved: list[ResolvedAdapter], base: "Base") -> list[LoadedAdapter]:
        from lorahub_cli.pipeline.adapters import prepare

        return prepare(resolved, base)

    def _apply(self, pipe: Any, loaded: list[LoadedAdapter]) -> None:
        from lorahub_cli.pipeline.build import oom_as_error

        state: PipelineState = pipe.lorahub
        start = time.perf_counter()
        with oom_as_error("applying the adapters"):
            if state.stack == "peft":
                report = state.engine.apply([(a.adapter.name, a.pairs, a.adapter.weight) for a in loaded])
            else:
                report = state.engine.apply([(a.pairs, a.adapter.weight) for a in loaded],
                                            keep_originals=not state.fused)
        state.switch_seconds = time.perf_counter() - start
        state.adapters, state.report = loaded, report
        state.warnings = [w for a in loaded for w in a.warnings]
        if report.skipped:
            state.warnings.append(f"{len(report.skipped)} adapter layer(s) have no fitting layer in this pipeline "
                                  f"and were left out, e.g. {report.skipped[0]}")

    def _switch(self, pipe: Any, resolved: list[ResolvedAdapter]) -> None:
        state: Optional[PipelineState] = getattr(pipe, "lorahub", None)
        if state is None:
            raise UsageError("this pipeline was not built by Library.pipeline(); build it there to switch adapters")
        if state.fused:
            raise UsageError("this pipeline's adapters are fused (no originals kept); build a new pipeline")
        current = {a.adapter.sha256: a for a in state.adapters}
        loaded = []
        need = [r for r in resolved if r.sha256 not in current]
        fresh = iter(self._load(need, state.base))
        for r in resolved:   # reuse pairs already read; only new adapters are checked and read
            if r.sha256 in current:
                old = current[r.sha256]
                loaded.append(LoadedAdapter(r, old.pairs, old.check, old.warnings))
            else:
                loaded.append(next(fresh))
        tokens = _pivotal_tokens(resolved)
        changed = [e.sha256 for e in tokens] != [e.sha256 for e in state.embeddings if e.from_adapter]
        if changed:   # a width no encoder takes is refused before the weights or the vocabulary change
            from lorahub_cli.embeddings.load import check_loadable

            check_loadable(pipe, tokens)
        self._apply(pipe, loaded)
        if changed:
            self._reload_tokens(pipe, tokens)
        state.warnings += state.token_warnings

    def _reload_tokens(self, pipe: Any, pivotal: list[Any]) -> None:
        """The set's pivotal-tuning tokens in place of the last set's: every token this pipeline loaded comes
        out, then the new set's tokens and the embeddings asked for go in, in the order a fresh pipeline loads
        them (so a reused pipeline tokenizes a prompt exactly as a new one would)."""
        from lorahub_cli.embeddings.load import load_embeddings, unload_embeddings

        state: PipelineState = pipe.lorahub
        asked = [e for e in state.embeddings if not e.from_adapter]
        unload_embeddings(pipe, state.embeddings)
        state.embeddings = [*pivotal, *asked]
        state.token_warnings = load_embeddings(pipe, state.embeddings)

    # --- generation -------------------------------------------------------------------------------
    def generate(self, prompt: Union[str, Sequence[str]], *, base: Union[str, "Base", None] = None,
                 adapters: AdapterWeights = None, pipe: Any = None, negative_prompt: str = "",
                 steps: Optional[int] = None, guidance: Optional[float] = None, seed: Optional[int] = None,
                 size: Union[str, tuple[int, int], None] = None, scheduler: Optional[str] = None,
                 fuse: bool = False, stack: str = "merge", device: str = "auto", dtype: str = "auto",
                 output_dir: Union[str, Path, None] = None, embeddings: Any = None) -> list[Generated]:
        """Images for ``prompt`` (one, or a list: one image each, all with the same seed).

        Give ``pipe`` (from ``pipeline()``) to use it as it is, or ``base`` (+ ``adapters``): the library keeps
        the pipeline it built last and reuses it for the same base, device and dtype, switching adapter sets
        by exact undo. With ``output_dir`` each image is saved as a PNG with its recipe.
        """
        from lorahub_cli.pipeline.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, parse_size

        if pipe is None:
            if base is None:
                raise UsageError("generate needs base= (or a pipe= from Library.pipeline())")
            pipe = self._pipeline_for(base, self._resolve(adapters), fuse=fuse, stack=stack, device=device,
                                      dtype=dtype, embeddings=self._embeddings(embeddings))
        elif adapters is not None:
            self.set_adapters(pipe, adapters)
        width, height = size if isinstance(size, tuple) else parse_size(size)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise UsageError("no prompt given")
        settings = [GenerateSettings(prompt=p, negative_prompt=negative_prompt or "",
                                     steps=steps if steps is not None else DEFAULT_STEPS,
                                     guidance=guidance if guidance is not None else DEFAULT_GUIDANCE,
                                     seed=seed, width=width, height=height,
                                     scheduler=scheduler).resolved(pipe) for p in prompts]
        if seed is None:   # one seed for the whole batch: prompts compare on the same noise
            settings = [_with_seed(s, settings[0].seed) for s in settings]
        return [self._one(pipe, s, output_dir) for s in settings]

    def _pipeline_for(self, base: Any, resolved: list[ResolvedAdapter], *, fuse: bool, stack: str, device: str,
                      dtype: str, embeddings: Sequence[Any] = ()) -> Any:
        from lorahub_cli.bases import Base, resolve_base
        from lorahub_cli.pipeline.build import choose_device, choose_dtype, dtype_name

        base = base if isinstance(base, Base) else resolve_base(base, home=self.home)
        dev = choose_device(device)
        last = self._last
        if last is not None:
            s: PipelineState = last.lorahub
            same = (s.base.id == base.id and s.device == dev and s.dtype == dtype_name(choose_dtype(dtype, dev))
                    and s.stack == stack and _same_embeddings(s, embeddings))
            if same and not s.fused and not fuse:
                self._switch(last, resolved)
                return last
            if same and s.fused and fuse and _same_set(s.adapters, resolved):
                return last
        self._last = None   # let the old pipeline go before the new one takes the memory
        self._last = self._build(base, resolved, fuse=fuse, stack=stack, device=dev, dtype=dtype,
                                 embeddings=embeddings)
        return self._last

    def _one(self, pipe: Any, settings: GenerateSettings, output_dir: Union[str, Path, None]) -> Generated:
        from lorahub_cli.pipeline.generate import generate_image, save_png

        start = time.perf_counter()
        image, blanked = generate_image(pipe, settings)
        seconds = time.perf_counter() - start
        recipe = make_recipe(pipe, settings)
        path = save_png(image, recipe, Path(output_dir)) if output_dir is not None else None
        return Generated(image=image, recipe=recipe, path=path, seconds=seconds, blanked=blanked)

    # --- recipes ----------------------------------------------------------------------------------
    def rerun_job(self, image: Union[str, Path, "Recipe"], *, device: str = "auto", dtype: Optional[str] = None,
                  **overrides: Any) -> "RerunJob":
        """What it takes to make an image again from its embedded recipe: the base, the adapters (found by
        sha256 in the library, or at the recorded path if the bytes still match), how they were applied, and
        the settings. ``overrides`` (None = keep): prompt, negative_prompt, steps, guidance, seed, size,
        scheduler. The recipe's dtype is kept when the device kind is the recipe's."""
        from lorahub_cli.pipeline.adapters import resolve_by_sha256
        from lorahub_cli.pipeline.build import choose_device
        from lorahub_cli.pipeline.recipe import Recipe, read_recipe

        unknown = set(overrides) - set(_OVERRIDABLE)
        if unknown:
            raise UsageError(f"a re-run cannot override {', '.join(sorted(unknown))}")
        # a Recipe built in Python gets the checks a recipe read from a PNG gets
        recipe = image.checked() if isinstance(image, Recipe) else read_recipe(Path(image))
        resolved = [resolve_by_sha256(a["name"], a["sha256"], float(a["weight"]), self.registry, a.get("path"))
                    for a in recipe.adapters]
        from lorahub_cli.embeddings.load import resolve_embedding

        # an embedding by its bytes: the library entry holding them, else the file the recipe names
        embeddings = [resolve_embedding(e.get("path") or e["sha256"], self.registry, e["token"])
                      for e in recipe.embeddings]
        dev = choose_device(device)
        if dtype is None:
            dtype = recipe.dtype if dev.split(":")[0] == recipe.device.split(":")[0] else "auto"
        settings: dict[str, Any] = {k: getattr(recipe, k) for k in _OVERRIDABLE if k != "size"}
        settings["size"] = (recipe.width, recipe.height)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return RerunJob(recipe=recipe, base=recipe.base, adapters=resolved, fuse=recipe.fused, stack=recipe.stack,
                        device=dev, dtype=dtype, settings=settings, embeddings=embeddings)

    def rerun(self, image: Union[str, Path, "Recipe"], *, output_dir: Union[str, Path, None] = None,
              device: str = "auto", dtype: Optional[str] = None, **overrides: Any) -> list[Generated]:
        """``rerun_job`` then ``generate``: the image made again (same pixels on the same device and dtype)."""
        job = self.rerun_job(image, device=device, dtype=dtype, **overrides)
        settings = dict(job.settings)
        return self.generate(settings.pop("prompt"), base=job.base, adapters=job.adapters, fuse=job.fuse,
                             stack=job.stack, device=job.device, dtype=job.dtype, output_dir=output_dir,
                             embeddings=job.embeddings, **settings)

    # --- fused export -----------------------------------------------------------------------------
    def fuse(self, base: Union[str, "Base"], adapters: AdapterWeights, output: Union[str, Path], *,
             device: str = "auto", dtype: str = "auto", force: bool = False) -> FuseResult:
        """Save ``base`` with ``adapters`` merged in (fp32 sums, one rounding) as a plain diffusers folder."""
        from lorahub_cli.bases import Base, resolve_base
        from lorahub_cli.pipeline.save import save_fused
        from lorahub_cli.targets import check_fused_output

        resolved = self._resolve(adapters)
        if not resolved:
            raise UsageError("nothing to fuse: give at least one adapter")
        base = base if isinstance(base, Base) else resolve_base(base, home=self.home)
        inputs = [r.path for r in resolved]
        check_fused_output(output, force=force, inputs=inputs, base=base.folder)   # before the model loads
        pipe = self._build(base, resolved, fuse=True, stack="merge", device=device, dtype=dtype)
        state: PipelineState = pipe.lorahub
        out = save_fused(pipe, Path(output), force=force, inputs=inputs, base=state.base.folder, provenance={
            "base": _base_ref(state.base), "base_id": state.base.id,
            "adapters": state.adapter_recipe(), "dtype": state.dtype})
        return FuseResult(output=out, base=state.base.id, dtype=state.dtype, adapters=state.adapter_recipe(),
                          layers=state.report.layers if state.report else 0, warnings=list(state.warnings))

    def fuse_single_file(self, base: Union[str, "Base"], adapters: AdapterWeights, output: Union[str, Path], *,
                         dtype: Optional[str] = None, force: bool = False) -> Any:
        """Write ``base`` with ``adapters`` merged in (fp32 sums, one cast to ``dtype``: fp16, bf16 or fp32; default
        the base file's own) as one .safetensors in the original layout (A1111 / ComfyUI); see
        ``lorahub_cli.pipeline.fuse_file``."""
        from lorahub_cli.bases import Base, resolve_base
        from lorahub_cli.pipeline.fuse_file import fuse_to_single_file, torch_dtype

        dtype = None if dtype in (None, "auto") else dtype
        if dtype is not None:
            torch_dtype(dtype)   # a bad --dtype is a usage error before anything is read
        resolved = self._resolve(adapters)
        if not resolved:
            raise UsageError("nothing to fuse: give at least one adapter")
        base = base if isinstance(base, Base) else resolve_base(base, home=self.home)
        return fuse_to_single_file(base, self._load(resolved, base), Path(output), dtype=dtype, force=force)


def _engine(pipe: Any, stack: str) -> Any:
    if stack == "peft":
        from lorahub_cli.pipeline.peft_stack import PeftStack

        return PeftStack(pipe)
    from lorahub_cli.pipeline.stack import MergedStack

    return MergedStack(pipe)


def _pivotal_tokens(resolved: Sequence[ResolvedAdapter]) -> list[Any]:
    """The tokens pivotal-tuning LoRAs carry inside, as embeddings that load with them."""
    from lorahub_cli.embeddings.load import adapter_tokens

    return [t for t in (adapter_tokens(r.path, r.name, r.sha256) for r in resolved) if t is not None]


def _same_set(loaded: list[LoadedAdapter], resolved: list[ResolvedAdapter]) -> bool:
    return [(a.adapter.sha256, a.adapter.weight) for a in loaded] == [(r.sha256, r.weight) for r in resolved]


def _same_embeddings(state: PipelineState, embeddings: Sequence[Any]) -> bool:
    """A pipeline's loaded tokens cannot be switched like adapters: reuse it only for the same embeddings."""
    return ([(e.sha256, e.token) for e in state.embeddings if not e.from_adapter]
            == [(e.sha256, e.token) for e in embeddings])


def _with_seed(settings: GenerateSettings, seed: Optional[int]) -> GenerateSettings:
    from dataclasses import replace

    return replace(settings, seed=seed)


def make_recipe(pipe: Any, settings: GenerateSettings) -> "Recipe":
    from lorahub_cli.pipeline.recipe import Recipe

    state: Optional[PipelineState] = getattr(pipe, "lorahub", None)
    if state is None:
        raise UsageError("this pipeline was not built by Library.pipeline(); its base and adapters are unknown")
    return Recipe(prompt=settings.prompt, negative_prompt=settings.negative_prompt, seed=int(settings.seed),
                  steps=settings.steps, guidance=float(settings.guidance), scheduler=settings.scheduler,
                  width=int(settings.width), height=int(settings.height), base=_base_ref(state.base),
                  base_id=state.base.id, adapters=state.adapter_recipe(), embeddings=state.embedding_recipe(),
                  stack=state.stack, fused=state.fused,
                  device=state.device, dtype=state.dtype, versions=library_versions())


def _base_ref(base: "Base") -> str:
    """What a re-run passes as --base: a folder by its absolute path (the cwd may differ), else as given."""
    from lorahub_cli.bases import FOLDER

    return base.id if base.kind == FOLDER else base.ref


def library_versions() -> dict[str, str]:
    import diffusers
    import torch

    from lorahub_cli import __version__

    return {"lorahub-cli": __version__, "diffusers": diffusers.__version__, "torch": torch.__version__}
