"""Which file names from a repository are safe to use as paths below a local folder.

A Hub listing and ``--file`` are text from outside. A name with a ``..`` segment, or one that is absolute
(``/etc/x``), drive-relative (``C:x``) or UNC (``\\\\host\\share``) under POSIX or Windows rules, would land
outside the folder it is saved in; huggingface_hub refuses such names with a bare ValueError, mid-download.
We refuse them first, as ``unsafe-path``, before any byte is fetched.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from lorahub_cli.errors import UnsafePath


def is_safe_repo_path(name: str) -> bool:
    """True when ``name`` (a '/'-separated path in a repo) stays inside any folder it is joined onto."""
    if not name or "\0" in name:
        return False
    if ".." in name.replace("\\", "/").split("/"):
        return False
    # each '/' part is read under Windows rules too: a file saved on Linux may be used on Windows later
    anchored = [PurePosixPath(name), *(PureWindowsPath(part) for part in name.split("/"))]
    return not any(p.drive or p.root for p in anchored)


def check_repo_path(name: str, *, where: str) -> str:
    """``name`` unchanged when safe; else UnsafePath naming it and ``where`` it came from."""
    if not is_safe_repo_path(name):
        raise UnsafePath(f"unsafe file name {name!r} in {where}: it points outside the repository")
    return name
