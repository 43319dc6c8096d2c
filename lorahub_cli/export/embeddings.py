"""Where a UI keeps textual-inversion embeddings, found from its LoRA folder (embeddings never go into a LoRA
folder: every UI would list them as LoRAs and fail to load them).

    ComfyUI       models/loras   -> models/embeddings   (prompts write "embedding:NAME")
    A1111, Forge  models/Lora    -> embeddings          (at the UI's root; sub-folders are read, and the file's
                                                          stem is the prompt's word)
    SwarmUI       Models/Lora    -> Models/Embeddings
    InvokeAI      the scanned folder -> its embeddings/ sub-folder (its "Scan Folder" tells a TI file from a
                                                          LoRA by the content, as it does on install)
    plain / any other folder: none; ``--embeddings-to DIR`` names one

The names are matched with their case: A1111's ``models/Lora`` and SwarmUI's ``Models/Lora`` differ only in it
(a named target's kind decides where a case-blind disk cannot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

# (LoRA folder's last two parts) -> the embeddings folder, relative to the folder above "models"
_BESIDE = {("models", "loras"): ("models", "embeddings"),      # ComfyUI
           ("Models", "Lora"): ("Models", "Embeddings"),      # SwarmUI
           ("models", "Lora"): ("embeddings",)}               # A1111, Forge
_BY_KIND = {"comfyui": ("models", "loras"), "swarmui": ("Models", "Lora"), "a1111": ("models", "Lora"),
            "forge": ("models", "Lora")}


def embeddings_folder(lora_folder: Path, kind: Optional[str] = None) -> Optional[Path]:
    """The embeddings folder of the UI whose LoRA folder is ``lora_folder`` (see the module docstring);
    None when the folder is no known UI's."""
    folder = Path(lora_folder)
    if kind == "invokeai":
        return folder / "embeddings"
    tail = tuple(folder.parts[-2:])
    if kind in _BY_KIND:
        if tuple(p.casefold() for p in tail) != tuple(p.casefold() for p in _BY_KIND[kind]):
            return None   # the UI was not found under the target's folder: its LoRA folder is a plain one
        tail = _BY_KIND[kind]
    if tail not in _BESIDE:
        return None
    return folder.parent.parent.joinpath(*_BESIDE[tail])
