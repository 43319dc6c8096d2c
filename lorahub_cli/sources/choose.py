"""Which file of a repository is the adapter.

``pytorch_lora_weights.safetensors`` first (what diffusers writes), then its ``.bin``, then the one
``*.safetensors``; failing that, the one other weight file. Several candidates: an error that lists them.
A weight file whose name would land outside the repository's folder (``../x.safetensors``, ``/abs/x.bin``)
is ``unsafe-path`` before anything is downloaded: asked for by name, or anywhere in a listing we choose from
(a hostile repo is not guessed around; a safe file in it can still be named with --file).
"""

from __future__ import annotations

from typing import Optional

from lorahub_cli.errors import Ambiguous, NotFound, UnsafePath
from lorahub_cli.sources.repo_path import check_repo_path, is_safe_repo_path

PREFERRED = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")


def weight_files(files: list[str]) -> list[str]:
    return sorted(f for f in files if f.lower().endswith((".safetensors",) + OTHER_WEIGHTS))


def choose_weight_file(files: list[str], *, repo_id: str, wanted: Optional[str] = None) -> str:
    """The adapter file among ``files`` (paths in the repo); raises NotFound or Ambiguous (listing --file)."""
    if wanted:
        wanted = check_repo_path(wanted.strip("/"), where=repo_id)
        if wanted in files:
            return wanted
        raise NotFound(f"{wanted} is not in {repo_id}", hint=_listing(weight_files(files) or files))
    unsafe = [f for f in weight_files(files) if not is_safe_repo_path(f)]
    if unsafe:
        safe = [f for f in weight_files(files) if is_safe_repo_path(f)]
        raise UnsafePath(f"{repo_id} lists weight files named outside the repository: {', '.join(map(repr, unsafe))}",
                         hint=f"Nothing was downloaded. {_listing(safe)}" if safe else None)
    for name in PREFERRED:
        matches = [f for f in files if f.rsplit("/", 1)[-1] == name]
        if name in matches:          # the top-level copy beats checkpoint folders
            return name
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise _several(matches, repo_id)
    for suffixes in ((".safetensors",), OTHER_WEIGHTS):
        candidates = sorted(f for f in files if f.lower().endswith(suffixes))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise _several(candidates, repo_id)
    raise NotFound(f"no adapter weights (.safetensors, .bin, .pt, .ckpt) in {repo_id}",
                   hint=f"Files there: {', '.join(sorted(files)) or 'none'}.")


def _several(candidates: list[str], repo_id: str) -> Ambiguous:
    return Ambiguous(f"{repo_id} has {len(candidates)} weight files: {', '.join(candidates)}",
                     hint=_listing(candidates))


def _listing(candidates: list[str]) -> str:
    example = candidates[0] if candidates else "FILE"
    return f"Choose one with --file, e.g. --file {example} (candidates: {', '.join(candidates) or 'none'})."
