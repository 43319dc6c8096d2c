"""One exception hierarchy for the whole product.

Every error a user can meet carries a stable kebab-case ``code`` (used in JSON output, the database and
tests), a message for people, an optional hint, and the process exit status it maps to. Codes and exit
statuses are API: add new ones, never rename or renumber.

Exit statuses: 0 success; 1 the command ran and the answer is negative or an input was rejected;
2 usage error; 3 could not decide or could not reach what it needed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class LoraError(Exception):
    """Base class: a problem we understand and can explain."""

    code = "error"
    exit_code = EXIT_REJECTED
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        if code is not None:
            self.code = code

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


# --- what a file is not ---------------------------------------------------------------------------
class InputRejected(LoraError):
    """An input file or value was looked at and refused (exit 1)."""


class NotAnAdapterFile(InputRejected):
    code = "not-an-adapter-file"


class LfsPointer(InputRejected):
    code = "lfs-pointer"
    default_hint = "This is a Git LFS pointer, not the weights: run `git lfs pull` in its repository, or download the file itself."


class Truncated(InputRejected):
    code = "truncated"
    default_hint = "The download was cut short; fetch the file again."


class CorruptHeader(InputRejected):
    code = "corrupt-header"


class UnsafePickle(InputRejected):
    code = "unsafe-pickle"
    default_hint = "The pickle asks to import code; lora never runs it. Ask the author for a .safetensors file."


class NotALora(InputRejected):
    code = "not-a-lora"


class TextualInversion(InputRejected):
    code = "textual-inversion"
    default_hint = "This is a textual-inversion embedding, not a LoRA; load it with load_textual_inversion()."


class NotDiffusion(InputRejected):
    code = "not-diffusion"
    default_hint = "This LoRA is for a language model or another non-diffusion network."


class HashMismatch(InputRejected):
    code = "hash-mismatch"


class Incompatible(InputRejected):
    code = "incompatible"


class Duplicate(InputRejected):
    code = "duplicate"


# --- lookups --------------------------------------------------------------------------------------
class NotFound(LoraError):
    code = "not-found"


class Ambiguous(LoraError):
    code = "ambiguous"


class AlreadyExists(LoraError):
    code = "already-exists"


class InvalidName(LoraError):
    code = "invalid-name"


class UsageError(LoraError):
    code = "usage"
    exit_code = EXIT_USAGE


# --- could not decide / could not reach -----------------------------------------------------------
class Unreachable(LoraError):
    exit_code = EXIT_UNREACHABLE
    code = "unreachable"


class Offline(Unreachable):
    code = "offline"


class NetworkError(Unreachable):
    code = "network"
    default_hint = "Check the connection and try again."


class MissingDependency(Unreachable):
    code = "missing-dependency"


class DatabaseError(Unreachable):
    code = "database"


class UnsupportedDtype(InputRejected):
    """A tensor's dtype is valid in the file but lora cannot compute with it (e.g. packed F4/F6)."""

    code = "unsupported-dtype"


class Gated(Unreachable):
    """The source exists but needs an account with access (a gated or private Hub repository)."""

    code = "gated"
    default_hint = "Log in with `hf auth login` (or set HF_TOKEN) using an account that was granted access."


class DiskFull(Unreachable):
    code = "disk-full"
    default_hint = "Free some disk space (or point HF_HOME / LORAHUB_HOME at a larger disk) and try again."


class NeedsConversion(InputRejected):
    """A pickle checkpoint that the library stores only as safetensors, once it has been converted."""

    code = "needs-conversion"
    default_hint = "Convert it to .safetensors first (or ask the author for a .safetensors file), then add that."


class NonFinite(InputRejected):
    """A weight holds NaN or infinite values (a damaged file, or one saved after training diverged)."""

    code = "non-finite"


# --- training (lora train) ------------------------------------------------------------------------
class EmptyDataset(InputRejected):
    code = "empty-dataset"


class UnreadableImage(InputRejected):
    code = "unreadable-image"


class MissingCaption(InputRejected):
    code = "missing-caption"
    default_hint = ("Give every image a caption: a metadata.jsonl with file_name and text columns (the Hugging "
                    "Face imagefolder convention), or a .txt file with the same name beside each image.")


class TrainingFailed(LoraError):
    """Training started but could not finish (a worker process died, the loss became NaN, ...)."""

    code = "training-failed"


# --- conversion (lora convert) --------------------------------------------------------------------
class UnsupportedConversion(InputRejected):
    """The adapter cannot be written in the asked layout without changing what it does (LoHa, LoKr, DoRA, ...)."""

    code = "unsupported-conversion"


class UnmappedModules(InputRejected):
    """Some of the adapter's layers have no counterpart in the base architecture (wrong family, unknown names)."""

    code = "unmapped-modules"


class VerifyFailed(LoraError):
    """The written file did not read back as what was meant to be written; it was not kept."""

    code = "verify-failed"
    default_hint = "The disk or the safetensors writer misbehaved; nothing was kept. Try again, or report it."


class DamagedFile(LoraError):
    """A small state file of ours (e.g. $LORAHUB_HOME/bases.json) that no longer parses."""

    code = "damaged-file"


# --- generation (lora generate / fuse / recipe) ---------------------------------------------------
class OutOfMemory(Unreachable):
    """The device ran out of memory while building the pipeline or generating."""

    code = "out-of-memory"
    default_hint = ("Try a smaller --size, --dtype fp16 (or bf16), fewer adapters, or --device cpu; close other "
                    "programs using the GPU.")


class NoRecipe(InputRejected):
    """An image without the recipe `lora generate` embeds (or with one this version cannot read)."""

    code = "no-recipe"
    default_hint = "Only PNGs written by `lora generate` carry a lorahub recipe; A1111 'parameters' alone name no base."
