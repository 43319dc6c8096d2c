"""Where a command may write: the one check for every output path, made before any work is done.

- A file output (``convert -o``, ``merge -o``) may replace only a regular file or a symlink, and only with
  ``--force``; a symlink is replaced itself, never the file it points to. A folder, device, FIFO or socket at
  the path is refused (``unsafe-output``): as root, a rename over ``/dev/null`` replaces the device.
- A folder of new files (``generate -o``, ``train --run-dir``) must be a folder, or not exist yet.
- A fused pipeline (``fuse -o``) may replace, with ``--force``, only a folder an earlier fuse wrote (it carries
  ``FUSED_MARKER``); never a folder that holds or lies inside an input, the base, the library home or the
  Hugging Face cache.
- Nothing is written inside the library's own files ($LORAHUB_HOME: blobs, staging, database, caches), except
  training runs under ``runs/``, which are the user's.

Paths are compared after resolving their folders but not their last part, so a symlink at ``-o`` is judged
as the link it is. ``registry.publish`` checks again, at the rename, that it replaces nothing but a file or
a link.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Union

from lorahub_cli.errors import AlreadyExists, UsageError
from registry.errors import UnsafeOutput
from registry.publish import describe_kind

FUSED_MARKER = "lorahub_fuse.json"   # written in every fused folder (it names the base and the adapters)
USER_FOLDERS = ("runs",)             # in $LORAHUB_HOME, folders of the user's own outputs

PathLike = Union[str, Path]


def output_path(path: PathLike) -> Path:
    """``path`` made absolute, its folders resolved and its last part kept (a symlink stays a symlink)."""
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
    return p if not p.name else p.parent.resolve() / p.name


def check_file_output(path: PathLike, *, force: bool) -> Path:
    """-o names a file to write; returns it as ``output_path`` does. Refuses an existing one without
    --force (already-exists), and anything but a regular file or a symlink (unsafe-output)."""
    out = output_path(path)
    _refuse_library(out)
    mode = _lstat_mode(out)
    if mode is None:
        _refuse_file_above(out)
        return out
    if stat.S_ISDIR(mode):   # a plain usage error, as it always was
        raise UsageError(f"{out} is a folder; -o names the output file",
                           hint=f"Pass -o {out / 'NAME.safetensors'} to write into it.")
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise UnsafeOutput(f"{out} is {describe_kind(mode)}; lora writes only regular files",
                           hint="Pass -o with the path of a new file.")
    if not force:
        raise AlreadyExists(f"{out} exists already", hint="Pass --force to replace it, or -o to write elsewhere.")
    return out


def check_folder_output(path: PathLike, *, what: str = "-o") -> Path:
    """A folder that new files go into (never replacing any): it must be a folder, or not exist yet."""
    out = output_path(path)
    _refuse_library(out)
    try:
        mode = os.stat(out).st_mode   # a symlink to a folder is that folder
    except FileNotFoundError:
        if os.path.lexists(out):
            raise UnsafeOutput(f"{what} {out} is a symlink to nothing", hint=f"Pass {what} with a folder.") from None
        _refuse_file_above(out, what)
        return out
    except NotADirectoryError:
        _refuse_file_above(out, what)
        raise
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else describe_kind(mode)
        raise UnsafeOutput(f"{what} {out} is {kind}, not a folder", hint=f"Pass {what} with a folder (new or existing).")
    return out


def check_fused_output(path: PathLike, *, force: bool, inputs: Iterable[PathLike] = (),
                       base: Optional[PathLike] = None) -> Path:
    """``fuse -o``: a new folder, or with --force one that an earlier fuse wrote; never one that holds or lies
    inside an input, the base, the library home or the Hugging Face cache."""
    out = output_path(path)
    protected = [(Path(p).resolve(), f"the input {p}") for p in inputs]
    if base is not None:
        protected.append((Path(base).resolve(), f"the base's folder {base}"))
    home = _home()
    protected.append((home, f"the library home {home}"))
    cache = _hf_cache()
    if cache is not None:
        protected.append((cache, f"the Hugging Face cache {cache}"))
    for place, what in protected:
        if out == place or place in out.parents:
            raise UnsafeOutput(f"-o {out} lies inside {what}; a fused model is not written there",
                               hint="Pass -o with a folder of its own, outside the model, the inputs and the library.")
        if out in place.parents:
            raise UnsafeOutput(f"-o {out} holds {what}; replacing it would delete it",
                               hint="Pass -o with a folder of its own, outside the model, the inputs and the library.")
    mode = _lstat_mode(out)
    if mode is None:
        return out
    if not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        kind = "a file" if stat.S_ISREG(mode) else describe_kind(mode)
        raise UnsafeOutput(f"{out} is {kind}; -o names the folder to write", hint="Pass -o with a new folder.")
    if not force:
        raise AlreadyExists(f"{out} exists already", hint="Pass --force to replace it, or choose another -o.")
    if stat.S_ISDIR(mode):
        refuse_unless_fused(out)
    return out


def refuse_unless_fused(folder: Path) -> None:
    """--force replaces only a folder an earlier `lora fuse` wrote (it holds ``FUSED_MARKER``); a symlink is
    replaced itself, which leaves the folder it points to alone."""
    if Path(folder).is_symlink():
        return
    if not (Path(folder) / FUSED_MARKER).is_file():
        raise UnsafeOutput(f"{folder} was not written by `lora fuse` (no {FUSED_MARKER}); --force replaces only "
                           "a fused folder", hint="Pass -o with a new folder, or remove this one yourself.")


def _refuse_library(out: Path) -> None:
    home = _home()
    if out == home or home in out.parents:
        inside = out.relative_to(home).parts
        if inside and inside[0] in USER_FOLDERS and len(inside) > 1:
            return
        raise UnsafeOutput(f"{out} is inside the library's own files ({home})",
                           hint="Pass -o with a path outside $LORAHUB_HOME; `lora add` puts a file in the library.")
    db = _database_file()   # LORAHUB_DATABASE_URL may put it elsewhere
    if db is not None and out.parent == db.parent and out.name in {db.name + s for s in ("", "-wal", "-shm", "-journal")}:
        raise UnsafeOutput(f"{out} is the library's database", hint="Pass -o with another path.")


def _refuse_file_above(out: Path, what: str = "-o") -> None:
    """The folders to be made for ``out``: the nearest one that exists must be a folder."""
    for above in out.parents:
        if os.path.lexists(above):
            if not above.is_dir():
                raise UnsafeOutput(f"{what} {out}: {above} is not a folder", hint=f"Pass {what} with another path.")
            return


def _lstat_mode(path: Path) -> Optional[int]:
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def _home() -> Path:
    from registry.home import home_dir

    return home_dir().expanduser().resolve()


def _database_file() -> Optional[Path]:
    from registry.home import database_url, sqlite_file

    found = sqlite_file(database_url())
    return found.expanduser().resolve() if found is not None else None


def _hf_cache() -> Optional[Path]:
    """The Hugging Face hub cache, as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    value = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not value:
        hf_home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
        value = os.path.join(hf_home, "hub")
    return Path(os.path.expanduser(value)).resolve()
