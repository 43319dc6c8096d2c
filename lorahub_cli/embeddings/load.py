"""Embeddings into a diffusers pipeline, through its own ``load_textual_inversion`` (so prompts are rewritten
the way diffusers does: a token of n vectors becomes "token token_1 ... token_{n-1}").

    resolved = [resolve_embedding("easynegative", registry), resolve_embedding("xl-style:<xl>", registry)]
    check_fits(resolved, base_folder)          # before the base is loaded: the widths must fit
    warnings = load_embeddings(pipe, resolved)

SDXL files (``clip_l``/``clip_g``) load into both encoders under the same token; any other vector tensor
loads into the encoder of its width. Pivotal-tuning LoRAs carry their tokens inside (``<s1>`` keys, kohya's
``bundle_emb.NAME.*``): ``adapter_tokens`` finds them so that the LoRA and its tokens load together.
A token that is a word of the tokenizer's vocabulary is a warning with a new name suggested; one that is
already a token of it (diffusers refuses those) is loaded under the suggested name, said aloud.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

from lorahub_cli.errors import Incompatible, UsageError

if TYPE_CHECKING:
    import torch

EmbeddingSpecs = Union[None, Sequence[str], dict]
_ENCODERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


@dataclass
class ResolvedEmbedding:
    """One embedding to load: which bytes, and the token prompts use for it."""

    ref: str
    name: str                       # the library name, or the file's stem
    path: Path
    sha256: str
    token: str                      # what a prompt writes
    in_library: bool = True
    from_adapter: bool = False      # a pivotal-tuning LoRA's own tokens (recorded with the adapter, not here)
    keys: dict[str, str] = field(default_factory=dict)   # tensor key -> token it loads as (several: diffusers-ti)
    # what a load added, encoder -> tokens ("tok", "tok_1", ...; a renamed one under its new name): the undo
    loaded: dict[str, list[str]] = field(default_factory=dict, compare=False)

    def to_recipe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sha256": self.sha256, "token": self.token}
        if not self.in_library:
            out["path"] = str(self.path)
        return out


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
    """``NAME[:TOKEN]`` -> (NAME, TOKEN or None). A TOKEN has no path separator (``C:/x.pt`` is a NAME)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail:
        return head, tail
    return spec, None


def specs_of(embeddings: EmbeddingSpecs) -> list[tuple[str, Optional[str]]]:
    """["name", "name:token"], {"name": "token" or None} or None -> (ref, token) pairs."""
    if embeddings is None:
        return []
    if isinstance(embeddings, str):
        raise UsageError("embeddings: give a list of 'NAME[:TOKEN]' or a dict {name: token}")
    if isinstance(embeddings, dict):
        return [(str(k), None if v is None else str(v)) for k, v in embeddings.items()]
    return [parse_spec(str(s)) for s in embeddings]


def resolve_embedding(ref: str, registry: Any, token: Optional[str] = None) -> ResolvedEmbedding:
    """The embedding ``ref`` names (a library name, a sha256 prefix, a file), with its prompt token:
    ``token`` if given, else the one recorded (A1111: the file's stem; diffusers: the file's own)."""
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.inspect.embedding import describe_embedding, looks_like_embedding
    from lorahub_cli.resolve import resolve

    handle = resolve(ref, registry)
    raw = read_container(handle.path)
    if not looks_like_embedding(raw):
        raise UsageError(f"{ref} is not a textual-inversion embedding; give a LoRA with -a/--adapter")
    name = handle.entry.name if handle.entry is not None else Path(handle.path).stem
    report, _layout = describe_embedding(raw, Path(handle.path), name=None if handle.entry else handle.path.name)
    recorded = list(handle.entry.tokens) if handle.entry is not None and handle.entry.tokens else report.tokens
    if token is not None and not token.strip():
        raise UsageError(f"{ref}: the token after ':' is empty")
    keys = _token_keys(list(raw.tensors), report.format, token or recorded[0], recorded)
    if handle.entry is not None:
        sha = handle.entry.sha256
    else:
        from lorahub_cli.inspect.hashing import sha256_file

        sha = sha256_file(handle.path)
    return ResolvedEmbedding(ref=ref, name=name, path=Path(handle.path).resolve(), sha256=sha,
                             token=token or recorded[0], in_library=handle.entry is not None, keys=keys)


def _token_keys(keys: list[str], fmt: str, token: str, recorded: list[str]) -> dict[str, str]:
    if fmt == "diffusers-ti":
        vectors = [k for k in keys if not k.startswith("string_to_token")]
        if len(vectors) == 1:
            return {vectors[0]: token}
        return {k: k for k in vectors}   # several named tokens: each keeps its own name
    return {k: token for k in keys if not k.startswith("string_to_token")}


def check_fits(embeddings: Iterable[ResolvedEmbedding], folder: Path) -> None:
    """Refuse (``incompatible``, the widths named) an embedding no text encoder of the base can take."""
    from lorahub_cli.embeddings.fit import fit
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.inspect.embedding import vectors_of

    for e in embeddings:
        answer = fit(vectors_of(read_container(e.path)), Path(folder))
        if answer.verdict == "incompatible":
            raise Incompatible(f"embedding {e.name}: {answer.summary()}",
                               hint="Use an embedding made for this base's family (`lora check NAME --base ...`).")


def load_embeddings(pipe: Any, embeddings: Sequence[ResolvedEmbedding]) -> list[str]:
    """Load each embedding's vectors into the pipeline's text encoders; returns warnings. What each added is
    kept on it (``loaded``), so ``unload_embeddings`` can take exactly that out again."""
    warnings: list[str] = []
    for e in embeddings:
        tensors = _read(e.path, e.keys)
        e.loaded = {}
        for key, token in e.keys.items():
            warnings += load_vectors(pipe, tensors[key], token, key, e.name, e.loaded)
    return warnings


def unload_embeddings(pipe: Any, embeddings: Sequence[ResolvedEmbedding]) -> None:
    """Take the tokens ``load_embeddings`` added out of the tokenizers and their rows out of the encoders
    (diffusers' ``unload_textual_inversion``): the vocabulary is the base's again for what these added."""
    by_encoder: dict[str, list[str]] = {}
    for e in embeddings:
        for encoder, tokens in e.loaded.items():
            by_encoder.setdefault(encoder, []).extend(tokens)
        e.loaded = {}
    for encoder, tokens in by_encoder.items():
        pipe.unload_textual_inversion(tokens=tokens, tokenizer=getattr(pipe, _ENCODERS[encoder]),
                                      text_encoder=getattr(pipe, encoder))


def check_loadable(pipe: Any, embeddings: Sequence[ResolvedEmbedding]) -> None:
    """Refuse (``incompatible``) before anything changes when a tensor fits no text encoder of ``pipe``."""
    from lorahub_cli.inspect.containers import read_container

    for e in embeddings:
        shapes = read_container(e.path).tensors
        for key in e.keys:
            _require_encoder(pipe, key, int(shapes[key].shape[-1]), e.name)


def load_vectors(pipe: Any, vectors: "torch.Tensor", token: str, key: str, what: str,
                 loaded: Optional[dict[str, list[str]]] = None) -> list[str]:
    """One tensor of vectors under ``token``, into the encoder its key names (SDXL) or of its width; the
    tokens added are appended to ``loaded[encoder]``."""
    vectors = vectors.reshape(-1, vectors.shape[-1])
    encoder = _require_encoder(pipe, key, int(vectors.shape[-1]), what)
    tokenizer = getattr(pipe, _ENCODERS[encoder])
    warnings, token = _collision(tokenizer, token, what)
    pipe.load_textual_inversion(vectors, token=token, text_encoder=getattr(pipe, encoder), tokenizer=tokenizer)
    if loaded is not None:   # diffusers names a token of n vectors "token token_1 ... token_{n-1}"
        loaded.setdefault(encoder, []).extend([token] + [f"{token}_{i}" for i in range(1, len(vectors))])
    return warnings


def _require_encoder(pipe: Any, key: str, width: int, what: str) -> str:
    encoder = _encoder_for(pipe, key, width)
    if encoder is None:
        widths = {e: _width(getattr(pipe, e)) for e in _ENCODERS if getattr(pipe, e, None) is not None}
        raise Incompatible(f"{what}: '{key}' holds vectors {width} wide; the pipeline's text encoders "
                           "are " + ", ".join(f"{e} {w}" for e, w in widths.items()))
    return encoder


def _encoder_for(pipe: Any, key: str, width: int) -> Optional[str]:
    from lorahub_cli.inspect.embedding import SDXL_KEYS

    named = re.sub(r"^bundle_emb\.[^.]+\.", "", key)
    if named in SDXL_KEYS:
        encoder = SDXL_KEYS[named][0]
        te = getattr(pipe, encoder, None)
        return encoder if te is not None and _width(te) == width else None
    for encoder in _ENCODERS:
        te = getattr(pipe, encoder, None)
        if te is not None and _width(te) == width:
            return encoder
    return None


def _width(text_encoder: Any) -> int:
    return int(text_encoder.get_input_embeddings().weight.shape[-1])


def _collision(tokenizer: Any, token: str, what: str) -> tuple[list[str], str]:
    from lorahub_cli.embeddings.fit import suggest_name

    vocab = tokenizer.get_vocab()
    word = token.lower()
    if token in vocab or word in vocab:
        new = suggest_name(token, vocab)
        return [f"{what}: token '{token}' is already a token of the base's vocabulary; loaded as '{new}' instead "
                f"(write that in the prompt, or choose a name with -e NAME:TOKEN)"], new
    if f"{word}</w>" in vocab:
        return [f"{what}: token '{token}' is a word of the base's vocabulary: every '{token}' in a prompt becomes "
                f"the embedding; a name such as '{suggest_name(token, vocab)}' avoids that (-e NAME:TOKEN)"], token
    return [], token


def _read(path: Path, keys: dict[str, str]) -> dict[str, "torch.Tensor"]:
    from lorahub_cli.inspect.containers import read_container

    if read_container(path).container == "pickle":   # a .pt/.bin given as a file: weights-only, after the scan
        from lorahub_cli.inspect.pickle_reader import load_pickle_tensors

        tensors = load_pickle_tensors(path)
        return {k: tensors[k].float() for k in keys}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).float() for k in keys}


# --- pivotal tuning: a LoRA's own tokens ------------------------------------------------------------------
def adapter_tokens(path: Path, name: str, sha256: str) -> Optional[ResolvedEmbedding]:
    """The token vectors inside a LoRA file (cloneofsimo ``<s1>``, kohya ``bundle_emb.NAME.string_to_param.*``
    or ``.clip_l``/``.clip_g``), as an embedding to load beside it; None when it has none."""
    from lorahub_cli.inspect.containers import read_container

    keys = {}
    for key, spec in read_container(Path(path)).tensors.items():
        if re.fullmatch(r"<[^<>]+>", key) and 1 <= len(spec.shape) <= 2:
            keys[key] = key
        elif key.startswith("bundle_emb.") and not key.endswith(("string_to_token.*", ".string_to_token")):
            keys[key] = key.split(".")[1]
    if not keys:
        return None
    return ResolvedEmbedding(ref=name, name=name, path=Path(path), sha256=sha256, token=next(iter(keys.values())),
                             from_adapter=True, keys=keys)
