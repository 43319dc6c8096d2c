"""One exception hierarchy for the whole product.

Every error a user can meet carries a stable kebab-case ``code`` (used in JSON output, the database and
tests), a message for people, an optional hint, and the process exit status it maps to. Codes and exit
statuses are API: add new ones, never rename or renumber.

Exit statuses: 0 success; 1 the command ran and the answer is negative or an input was rejected;
2 usage error; 3 could not decide or could not reach what it needed.
"""

from __future__ import annotations

from registry.errors import (EXIT_OK, EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE,  # noqa: F401
                             AlreadyExists, Ambiguous, AmbiguousRef, DamagedFile, DamagedLibrary, DatabaseError,
                             DiskFull, HashMismatch, InputRejected, InvalidName, LoraError, NeedsConversion,
                             NotFound, ReadOnly, RegistryError, Unreachable, UnsafeOutput, UsageError)


# --- what a file is not ---------------------------------------------------------------------------


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
    default_hint = ("This is a textual-inversion embedding, not a LoRA: the library keeps it as kind embedding "
                    "(`lora add`, `lora check`), and `lora generate -e NAME` loads it; this command needs a LoRA.")


class NotDiffusion(InputRejected):
    code = "not-diffusion"
    default_hint = "This LoRA is for a language model or another non-diffusion network."


class Incompatible(InputRejected):
    code = "incompatible"


class Duplicate(InputRejected):
    code = "duplicate"


# --- could not decide / could not reach -----------------------------------------------------------


class Offline(Unreachable):
    code = "offline"


class NetworkError(Unreachable):
    code = "network"
    default_hint = "Check the connection and try again."


class MissingDependency(Unreachable):
    code = "missing-dependency"


class UnsupportedDtype(InputRejected):
    """A tensor's dtype is valid in the file but lora cannot compute with it (e.g. packed F4/F6)."""

    code = "unsupported-dtype"


class Gated(Unreachable):
    """The source exists but needs an account with access (a gated or private Hub repository)."""

    code = "gated"
    default_hint = "Log in with `hf auth login` (or set HF_TOKEN) using an account that was granted access."


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


# --- what an input is not (reading any input safely) ------------------------------------------------
class NotAFile(InputRejected):
    """A path that is a FIFO, a device, a socket or a folder where a regular file was expected."""

    code = "not-a-file"
    default_hint = "Give the path of a regular file (lora never reads pipes or devices, which can block or never end)."


class PickleBomb(InputRejected):
    """A pickle or zip checkpoint that would expand far beyond its size when read (shared-object or
    decompression bombs, tensors that view one storage many times)."""

    code = "pickle-bomb"
    default_hint = "The file would expand far beyond its size when read; lora refuses it. Ask for a .safetensors file."


# --- sources (lora pull) --------------------------------------------------------------------------
class UnsafePath(InputRejected):
    """A file name from a source (a Hub listing, --file) that would land outside its folder when saved:
    a '..' segment, an absolute, drive or UNC path."""

    code = "unsafe-path"
    default_hint = ("Nothing was downloaded. The name points outside the repository; ask its owner to rename "
                    "the file, or pick another one with --file.")


class BadRecipe(InputRejected):
    """An image's embedded recipe is malformed, too large (a decompression, text or pixel bomb) or holds a
    value the command line would refuse (steps 1e12, seed "notanint", a 100000x100000 size, ...)."""

    code = "bad-recipe"
    default_hint = ("The image's recipe cannot be used as it is; give the settings yourself, e.g. "
                    "`lora generate PROMPT --base BASE -a NAME:WEIGHT --seed N`.")


# --- single-file checkpoints as bases (issue 15) ---------------------------------------------------


class NotACheckpoint(InputRejected):
    """A file given as a base that is something else: a LoRA, an embedding, a VAE alone."""

    code = "not-a-checkpoint"
    default_hint = ("A base is a single-file checkpoint (.safetensors/.ckpt), a diffusers folder, an alias or a Hub "
                    "id; add adapters with `lora add FILE`.")


class UnknownArchitecture(InputRejected):
    """A checkpoint whose keys match none of the layouts lora knows (SD1/2, SDXL, SD3, Flux)."""

    code = "unknown-architecture"
    default_hint = "Convert it to a diffusers folder and pass that folder as --base."


class MissingComponent(InputRejected):
    """A checkpoint that lacks a component the command needs (many Flux/SD3 files hold the transformer only)."""

    code = "missing-component"
    default_hint = "Supply the component with --vae / --text-encoder, or borrow it from a diffusers folder."


# --- Civitai (issue 16) -----------------------------------------------------------------------------
class BadCivitaiRef(UsageError):
    """A Civitai source that cannot be read: a malformed page or download URL, ``civitai:`` reference or AIR."""

    code = "bad-civitai-ref"
    default_hint = ("Give civitai:MODEL[@VERSION], urn:air:sdxl:lora:civitai:MODEL@VERSION, or a civitai.com "
                    "/models/ID[?modelVersionId=V] or /api/download/models/V URL, e.g. `lora pull civitai:1234@5678`.")


class NoDownloadableFile(InputRejected):
    """A Civitai version that lists no model file that can be downloaded (or not the one --file names)."""

    code = "no-downloadable-file"
    default_hint = "Nothing was downloaded. Pick another version: `lora pull civitai:MODEL@VERSION`."


class WrongModelType(InputRejected):
    """A Civitai model of a type the library does not hold as an adapter (a checkpoint, a textual inversion)."""

    code = "wrong-model-type"
    default_hint = "Nothing was downloaded. `lora pull` takes LoRA, LoCon, DoRA and textual-inversion models from Civitai."


class BadApiAnswer(Unreachable):
    """A service answered with something that is not the JSON its API promises (a proxy's page, a cut body)."""

    code = "bad-api-answer"
    default_hint = "Nothing was recorded. Check CIVITAI_ENDPOINT, then try again later."


class LoginPage(Unreachable):
    """A download that came back as an HTML page (a login or early-access page) instead of the file."""

    code = "login-page"
    default_hint = ("Nothing was recorded. The file needs a signed-in account: create an API key on civitai.com "
                    "and set CIVITAI_API_TOKEN, then run the command again.")


class RateLimited(Unreachable):
    """The service kept answering 429 (too many requests) after waiting as long as it asked."""

    code = "rate-limited"
    default_hint = "Wait a minute and run the command again; answers already received are cached."


# --- export and sync into UI folders (lora export / sync / target) ------------------------------------
class BadLayout(UsageError):
    """A --layout template that names an unknown field, a format spec, an absolute path or a '..' folder."""

    code = "bad-layout"


class TargetNotWritable(InputRejected):
    """An export or sync target that cannot be written (read-only, not a folder, a symlink loop)."""

    code = "target-not-writable"
    default_hint = "Nothing in it was changed. Make the folder writable, or pick another with --to / `lora target add`."


class LinkImpossible(InputRejected):
    """The asked --link method cannot be used for this target (a hard link across filesystems, ...)."""

    code = "link-impossible"
    default_hint = "Leave out --link: lora then tries hardlink, symlink and copy in turn and says which it used."


class UnknownTarget(NotFound):
    code = "unknown-target"
    default_hint = "See `lora target list`; add one with `lora target add NAME DIR --kind comfyui`."


class DamagedManifest(InputRejected):
    """A target's .lorahub-sync.json cannot be read: sync no longer knows which files are its own."""

    code = "damaged-manifest"
    default_hint = ("Nothing was changed. Move the manifest away and run `lora sync` again: files it made become "
                    "collisions it reports, never files it deletes.")


# --- the web page (lora serve) -------------------------------------------------------------------------
class EditingDisabled(InputRejected):
    """A change asked of a `lora serve` that was started read-only (the default)."""

    code = "editing-disabled"
    default_hint = "Start it with `lora serve --allow-edit` and send the token it prints (header X-Lora-Token)."


class BadEditToken(InputRejected):
    """A change sent to `lora serve --allow-edit` without the token it printed at start-up, or with another."""

    code = "bad-edit-token"
    default_hint = "Send the token `lora serve --allow-edit` printed at start-up in the X-Lora-Token header."


# --- embeddings (textual inversion) and publishing ---------------------------------------------------
class InvalidEmbedding(InputRejected):
    """An embedding file whose vectors no text encoder could take: an impossible width, zero vectors, a
    shape that is not [width] or [vectors, width]."""

    code = "invalid-embedding"
    default_hint = "The file is damaged or not a textual-inversion embedding; fetch it again or ask its author."


class AuthRequired(InputRejected):
    """A push without a Hugging Face token, with a read-only one, or to a repository the token may not write."""

    code = "auth"
    default_hint = ("Set HF_TOKEN to a token with write access (or run `hf auth login`), and push to your own "
                    "namespace or an organisation you belong to.")


# --- lockfiles and bundles (lora lock / install / export-bundle) ------------------------------------------
class BadLock(InputRejected):
    """A lockfile that is not valid TOML, or a field that is missing or of the wrong type."""

    code = "bad-lock"
    default_hint = "Write the lock again with `lora lock NAME... -o lora.lock`, or fix the field named."


class UnknownLockVersion(InputRejected):
    """A lockfile of a format version this lorahub-cli does not read (a newer one, or a foreign file)."""

    code = "unknown-lock-version"
    default_hint = "Upgrade lorahub-cli, or write the lock again with this version's `lora lock`."


class NoSource(InputRejected):
    """A lock entry that is not in the library and names nowhere to fetch it from (an old recipe, a merge)."""

    code = "no-source"
    default_hint = "Add the file with `lora add FILE` (its sha256 must match), then run `lora install` again."


class SourcesFailed(Unreachable):
    """Every source a lock entry names failed (each one's code is in the message)."""

    code = "sources-failed"
    default_hint = "Check the network and the sources listed, or add the file with `lora add FILE`."


class UnsafeMember(InputRejected):
    """A bundle member that is a link, a device or a folder where a file is expected."""

    code = "unsafe-member"
    default_hint = "Only bundles written by `lora export-bundle` are read; ask for the set again."


class SizeMismatch(InputRejected):
    """A bundle member whose size differs from what the bundle's lock declares."""

    code = "size-mismatch"
    default_hint = "The bundle is damaged or was altered; write it again with `lora export-bundle`."


class BadBundle(InputRejected):
    """A tar that is not a bundle of ours: no lock.toml, unreadable, or a member the lock does not name."""

    code = "bad-bundle"
    default_hint = "Write the bundle with `lora export-bundle NAME... -o set.tar`."


# --- LyCORIS (issue 21) ------------------------------------------------------------------------------
class NotSupported(InputRejected):
    """An adapter network (OFT, GLoRA, ...) whose update this version does not compute; the message names it."""

    code = "not-supported"
    default_hint = "Use the file in a UI that implements it (ComfyUI, A1111); nothing was written."


class NeedsBase(UsageError):
    """A DoRA update depends on the base weight, so it can only be computed against a named base."""

    code = "needs-base"
    default_hint = "Name the base model with --base (a diffusers folder or a single-file checkpoint)."


# --- SDXL / Flux training (issue 20) --------------------------------------------------------------------
class ImageTooSmall(InputRejected):
    """Training images smaller than --resolution, refused because --small-images refuse says so."""

    code = "image-too-small"
    default_hint = ("Remove or replace them, lower --resolution, or pass --small-images upscale to train them "
                    "enlarged (what the diffusers scripts do) or --small-images bucket to train them at their "
                    "size in aspect-ratio buckets.")


# --- the settings file (issue 16: the Civitai token) -----------------------------------------------------
class BadConfig(InputRejected):
    """``<home>/config.toml`` is not valid TOML, or one of its values has the wrong type."""

    code = "bad-config"
    default_hint = "Fix or remove the file named (README: Settings file); nothing was done."
