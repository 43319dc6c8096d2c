"""The ecosystem's conventions, in one place: what A1111, Forge, Civitai and the metadata viewers expect to find in
the files and images we write.

- **Names**: a UI calls a LoRA by its file's stem; ``a1111_alias`` is the stem `lora export` gives an entry
  (the sanitiser's), without the ``:`` and ``,`` that A1111's infotext splits on.
- **Hashes**: A1111 and Civitai match a LoRA by the sha256 of its safetensors *data section* (kohya's addnet
  hash, Civitai's AutoV3, ``modelspec.hash_sha256`` without "0x"), first 12 hex digits; editing the header
  changes the file's sha256 (AutoV2) but not this one (formats.md §3.4).
- **Infotext**: ``<lora:ALIAS:WEIGHT>`` tags in the prompt, and ``Lora hashes: "ALIAS: AUTOV3, ..."``
  (``lora_tags``, ``lora_hashes``); ``parse_lora_tags`` reads both back.
- **Header keys** (``ecosystem_metadata``): kohya's ``ss_base_model_version`` / ``ss_v2`` (A1111's
  ``detect_version`` files anything without them as SD1 and hides it under SDXL), ``ss_network_module`` /
  ``ss_network_dim`` / ``ss_network_alpha``, and ModelSpec 1.0.1's required keys (``sai_model_spec``,
  ``architecture``, ``implementation``, ``title``) with ``resolution`` and ``date`` where known. ModelSpec
  is written only for a known family (``architecture`` is required and would otherwise be invented).
  ``sshs_model_hash`` / ``modelspec.hash_sha256`` are filled by ``convert.safe_write.write_verified(data_hash=
  True)`` once the file's data section exists.
"""

from __future__ import annotations

import hashlib
import re
import struct
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

from lorahub_cli.export.names import sanitize

MODELSPEC_VERSION = "1.0.1"
SS_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "sd3": "medium", "flux": "flux1"}
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sdxl": "stable-diffusion-xl-v1-base",
                 "sd3": "stable-diffusion-v3-medium", "flux": "flux-1-dev"}
RESOLUTIONS = {"sd1": "512x512", "sd2": "512x512", "sdxl": "1024x1024", "sd3": "1024x1024", "flux": "1024x1024"}
_NETWORK_MODULES = {"lora": "networks.lora", "locon": "lycoris.kohya", "loha": "lycoris.kohya",
                    "lokr": "lycoris.kohya"}
_TAG = re.compile(r"<lora:([^:>]+):([^:>]+)(?::[^>]*)?>")


# --- names and hashes ---------------------------------------------------------------------------------
def a1111_alias(name: str, sha256: str = "") -> str:
    """The name A1111 knows an exported entry by: its file's stem, with no ':' or ','."""
    return sanitize(name, tail=sha256[:8]).replace(",", "_")


def autov3(tensor_sha256: Optional[str]) -> Optional[str]:
    """Civitai's AutoV3 / A1111's short LoRA hash: the data-section sha256's first 12 hex digits."""
    return tensor_sha256[:12] if tensor_sha256 else None


def data_sha256(path: Path) -> Optional[str]:
    """The sha256 of a safetensors file's data section (everything after its header); None for a file that
    is not safetensors."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return None
        (length,) = struct.unpack("<Q", head)
        size = Path(path).stat().st_size
        if length > size - 8 or f.read(1) != b"{":
            return None
        f.seek(8 + length)
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- infotext -----------------------------------------------------------------------------------------
def _number(value: float) -> Any:
    return int(value) if float(value).is_integer() else float(value)


def lora_tags(adapters: Iterable[dict]) -> str:
    """``<lora:ALIAS:W>`` for each adapter of a recipe ({"name", "sha256", "weight"}), space-separated."""
    return " ".join(f"<lora:{a1111_alias(a['name'], a['sha256'])}:{_number(a['weight'])}>" for a in adapters)


def lora_hashes(adapters: Iterable[dict]) -> str:
    """The value of A1111's ``Lora hashes``: "ALIAS: AUTOV3" for each adapter whose tensor hash is known
    (a pickle outside the library has none: it is left out rather than given another hash)."""
    return ", ".join(f"{a1111_alias(a['name'], a['sha256'])}: {autov3(a['tensor_sha256'])}"
                     for a in adapters if a.get("tensor_sha256"))


def parse_lora_tags(prompt: str, hashes: Optional[str]) -> list[dict]:
    """The LoRAs an A1111 infotext names: each ``<lora:NAME:W>`` tag of the prompt with its weight, and its
    short hash from ``Lora hashes`` where listed (read as A1111 does: split on ',' then on the first ':')."""
    by_alias: dict[str, str] = {}
    for part in (hashes or "").split(","):
        if ":" in part:
            alias, short = part.split(":", 1)
            by_alias[alias.strip()] = short.strip()
    out = []
    for name, weight in _TAG.findall(prompt):
        try:
            w: Any = float(weight)
        except ValueError:
            w = weight
        out.append({"name": name, "weight": w, "hash": by_alias.get(name.replace(",", ""))})
    return out


# --- header keys --------------------------------------------------------------------------------------
def ecosystem_metadata(family: str, *, title: str, network: str = "lora", rank: Optional[int] = None,
                       alpha: Optional[float] = None, implementation: str = "diffusers",
                       v_prediction: bool = False, resolution: Optional[str] = None,
                       date: Optional[datetime] = None) -> dict[str, str]:
    """The kohya and ModelSpec keys a file of ``family`` should carry (all strings). Callers add only the keys
    their file lacks: a source's own values win."""
    out: dict[str, str] = {}
    if family in SS_VERSIONS:
        version = SS_VERSIONS[family]
        out["ss_base_model_version"] = "sd_v2_v" if family == "sd2" and v_prediction else version
        out["ss_v2"] = str(family == "sd2")
    if network in _NETWORK_MODULES:
        out["ss_network_module"] = _NETWORK_MODULES[network]
    if rank is not None:
        out["ss_network_dim"] = str(int(rank))
    if alpha is not None:
        out["ss_network_alpha"] = str(float(alpha))
    if family in ARCHITECTURES:
        arch = "stable-diffusion-v2-768-v" if family == "sd2" and v_prediction else ARCHITECTURES[family]
        out.update({"modelspec.sai_model_spec": MODELSPEC_VERSION, "modelspec.architecture": f"{arch}/lora",
                    "modelspec.implementation": implementation, "modelspec.title": title,
                    "modelspec.resolution": resolution or ("768x768" if family == "sd2" and v_prediction
                                                           else RESOLUTIONS[family])})
        if date is not None:
            out["modelspec.date"] = date.strftime("%Y-%m-%dT%H:%M:%S")
    return out
