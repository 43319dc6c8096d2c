"""The base pipeline: which device and dtype, and the diffusers pipeline for a base (alias, saved name, local
folder or Hub id, as ``lorahub_cli.bases.resolve_base`` names them).

Weights come from where the base lives: a folder is read with ``local_files_only``; an alias or Hub id goes
through the Hugging Face cache (HF_HUB_OFFLINE honoured: nothing cached -> ``Offline``, exit 3).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional

from lorahub_cli.bases import CHECKPOINT, FOLDER, Base, resolve_base
from lorahub_cli.errors import LoraError, NotFound, OutOfMemory, UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cuda", "cpu", "mps")
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def choose_device(device: str = "auto") -> str:
    """auto: cuda when present, else mps, else cpu. An explicit cuda without a GPU is refused (exit 3)."""
    import torch

    text = (device or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if text.split(":")[0] not in DEVICES[1:]:
        raise UsageError(f"unknown device {device!r}; use auto, cuda, cuda:N, mps or cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        from lorahub_cli.errors import Unreachable

        raise Unreachable("--device cuda, but torch sees no CUDA GPU", code="no-gpu",
                          hint="Use --device cpu (slow), or install a CUDA build of torch.")
    return text


def choose_dtype(dtype: str, device: str) -> "torch.dtype":
    """auto: fp16 on a GPU (the weights' usual release dtype), fp32 on the CPU (half precision is slow there)."""
    import torch

    text = (dtype or "auto").strip().lower()
    if text == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if text not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[text])


def dtype_name(dtype: "torch.dtype") -> str:
    return DTYPE_NAMES.get(str(dtype).removeprefix("torch."), str(dtype))


def load_pipeline(base: Base | str, *, device: str = "auto", dtype: str = "auto") -> tuple[Any, Base]:
    """The diffusers pipeline of ``base`` on ``device`` in ``dtype`` (progress bars off), and the resolved Base."""
    base = base if isinstance(base, Base) else resolve_base(base)
    device = choose_device(device)
    torch_dtype = choose_dtype(dtype, device)
    with oom_as_error(f"loading {base.id}"):
        pipe = _from_pretrained(base, torch_dtype)
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, base


def _from_pretrained(base: Base, torch_dtype: "torch.dtype") -> Any:
    from diffusers import DiffusionPipeline

    if base.kind == CHECKPOINT:   # a single file: from_single_file with local configs only
        from lorahub_cli.checkpoints.load import load_single_file

        return load_single_file(base, torch_dtype)
    if base.kind == FOLDER:
        source, kwargs = str(base.folder), {"local_files_only": True}
    else:
        from lorahub_cli.sources.hf import HubSettings

        settings = HubSettings.current()
        source = base.id
        kwargs = {"revision": base.revision, "cache_dir": str(settings.cache_dir),
                  "local_files_only": settings.offline}
    try:
        return DiffusionPipeline.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except LoraError:
        raise
    except Exception as exc:  # diffusers wraps hub errors in OSError / ValueError; find the one we understand
        raise _load_error(exc, base) from exc


def _load_error(exc: BaseException, base: Base) -> LoraError:
    if base.kind == FOLDER:
        return NotFound(f"could not load the base pipeline from {base.folder}: {exc}",
                        hint="The folder needs the weights too (save_pretrained output), not only configs.")
    from lorahub_cli.sources.hf import HubSettings
    from lorahub_cli.hubclient import hub_error

    offline = HubSettings.current().offline
    seen: Optional[BaseException] = exc
    while seen is not None:
        err = hub_error(seen, repo_id=base.id, revision=base.revision, offline=offline)
        if err is not None:
            return err
        seen = seen.__cause__ or seen.__context__
    if offline:
        from lorahub_cli.errors import Offline

        return Offline(f"the weights of {base.id} are not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                       hint=f"Download them once online (`hf download {base.id}`), or give a local folder as --base.")
    return NotFound(f"could not load the base pipeline {base.id}: {exc}")


@contextmanager
def oom_as_error(doing: str) -> Iterator[None]:
    """A device out-of-memory error inside becomes ``OutOfMemory`` (exit 3) saying what was running."""
    try:
        yield
    except Exception as exc:
        if not _is_oom(exc):
            raise
        import gc

        gc.collect()
        _empty_cache()
        raise OutOfMemory(f"out of memory while {doing}: {str(exc).splitlines()[0]}") from exc


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
