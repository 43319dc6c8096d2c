"""The registry's own errors, and the root of the product's one error hierarchy.

The registry is the bottom layer, so the root class lives here and ``lorahub_cli.errors`` builds on it: every
error a user can meet, from any layer, is a ``LoraError`` with a stable kebab-case ``code``, a message, an
optional hint and the exit status it maps to. The face renders them all the same way. Codes and exit statuses
are API: add new ones, never rename or renumber. This module imports nothing from ``lorahub_cli``.

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


class RegistryError(LoraError):
    """Raised by the library (records and blob store)."""


class InputRejected(RegistryError):
    """An input file or value was looked at and refused (exit 1)."""


class HashMismatch(InputRejected):
    code = "hash-mismatch"


class NeedsConversion(InputRejected):
    """A pickle checkpoint that the library stores only as safetensors, once it has been converted."""

    code = "needs-conversion"
    default_hint = "Convert it to .safetensors first (or ask the author for a .safetensors file), then add that."


class NotFound(RegistryError):
    code = "not-found"


class Ambiguous(RegistryError):
    code = "ambiguous"


class AmbiguousRef(Ambiguous):
    """A reference (name, sha256 prefix or path) that names more than one thing; the message lists them."""

    code = "ambiguous-ref"


class AlreadyExists(RegistryError):
    code = "already-exists"


class InvalidName(RegistryError):
    code = "invalid-name"


class UsageError(RegistryError):
    code = "usage"
    exit_code = EXIT_USAGE


class Unreachable(RegistryError):
    exit_code = EXIT_UNREACHABLE
    code = "unreachable"


class DatabaseError(Unreachable):
    code = "database"


class DiskFull(Unreachable):
    code = "disk-full"
    default_hint = "Free some disk space (or point HF_HOME / LORAHUB_HOME at a larger disk) and try again."


class ReadOnly(Unreachable):
    """The library's folder or database cannot be written (a read-only mount, another user's home)."""

    code = "read-only"
    default_hint = "Reading commands (list, show, check, ...) still work; run writing ones where the library is writable."


class DamagedLibrary(RegistryError):
    """The database is unreadable or has lost its records while stored blobs remain."""

    code = "damaged-library"
    default_hint = ("Nothing was changed. Rebuild the records from the stored files with `lora doctor --rebuild` "
                    "(it keeps a copy of the old database first).")


class DamagedFile(RegistryError):
    """Stored bytes, or a small state file of ours, that no longer read as what was recorded."""

    code = "damaged-file"


class UnsafeOutput(UsageError):
    """An output path that must not be written: a device, FIFO, socket or folder where a file goes, a folder
    that no earlier ``lora fuse`` wrote, or anything inside the library's own files or an input of the command."""

    code = "unsafe-output"
    default_hint = "Pass -o with a new path, or the path of a file (or fused folder) that lora wrote before."
