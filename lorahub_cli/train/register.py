"""A finished run into the library, through the registry API only.

The adapter is inspected like any other file (its README.md beside it gives the base model and, for
DreamBooth, the instance prompt as trigger word) and added with provenance ``trained`` (the source's path is
the run folder). The full training configuration travels in the file's own header (``lorahub.training``),
which the library keeps with the adapter's metadata.
"""

from __future__ import annotations

from typing import Any, Optional

from lorahub_cli.errors import UsageError
from lorahub_cli.train.result import TrainResult

PROVENANCE = "trained"
TAG = "trained"
TRIGGER_SOURCE = "training"   # where `lora show` says a trigger word came from (a user's words are "set by you")


def check_name_free(name: str, *, registry: Optional[Any] = None) -> None:
    """Fail before training, not after hours of it, when the library already has ``name``."""
    from lorahub_cli.errors import AlreadyExists, NotFound
    from registry.api import Registry

    reg = registry or Registry()
    try:
        reg.get(name)
    except NotFound:
        return
    raise AlreadyExists(f"the library already has an adapter named {name!r}",
                        hint="Pick another -o NAME, or remove the old one first.")


def register_result(result: TrainResult, *, registry: Optional[Any] = None):
    from lorahub_cli.inspect import inspect_file
    from registry.api import Registry
    from registry.records import SourceRecord

    if not result.adapter:
        raise UsageError("this result has no adapter file (it comes from a process other than the main one)")
    config = result.config
    report = inspect_file(result.adapter)
    reg = registry or Registry()
    _record_triggers(report, config)
    added = reg.add(result.adapter, report, name=result.name, tags=[TAG, *config.get("tags", [])],
                    source=SourceRecord(kind=PROVENANCE, path=result.run_dir))
    result.library = added.to_dict() if hasattr(added, "to_dict") else {"name": added.name, "sha256": added.sha256}
    return added


def _record_triggers(report: Any, config: dict) -> None:
    """DreamBooth's instance prompt is the trigger word: recorded as found by training, not as the user's
    override (passed as ``trigger_words`` to ``add`` it would read "set by you" and outrank later detection)."""
    prompt = (config.get("instance_prompt") or "").strip()
    if config.get("mode") != "dreambooth" or not prompt:
        return
    if prompt not in report.trigger_words:
        report.trigger_words.insert(0, prompt)
    report.trigger_word_sources[prompt] = TRIGGER_SOURCE
