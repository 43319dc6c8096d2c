"""A finished run into the library, through the registry API only.

The adapter is inspected like any other file (its README.md beside it gives the base model and, for
DreamBooth, the instance prompt as trigger word) and added with provenance ``trained`` (the source's path is
the run folder). The full training configuration travels in the file's own header (``lorahub.training``),
which the library keeps with the adapter's metadata.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

from lorahub_cli.errors import UsageError
from lorahub_cli.train.result import TrainResult

PROVENANCE = "trained"
TAG = "trained"
TRIGGER_SOURCE = "training"   # where `lora show` says a trigger word came from (a user's words are "set by you")


def check_name_free(name: str, *, registry: Optional[Any] = None) -> None:
    """Fail before training, not after hours of it, when the library already has ``name``."""
    from lorahub_cli.errors import AlreadyExists
    from registry.api import Registry

    with _opened(registry, Registry) as reg:
        taken = reg.find(name) is not None
    if taken:
        raise AlreadyExists(f"the library already has an adapter named {name!r}",
                            hint="Pick another -o NAME, or remove the old one first.")


def register_result(result: TrainResult, *, registry: Optional[Any] = None):
    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.records import SourceRecord

    if not result.adapter:
        raise UsageError("this result has no adapter file (it comes from a process other than the main one)")
    config = result.config
    with _opened(registry, Registry) as reg:
        added = ingest(result.adapter, reg, name=result.name, tags=[TAG, *config.get("tags", [])],
                       facts=_training_facts(config), source=SourceRecord(kind=PROVENANCE, path=result.run_dir))
    result.library = added.to_dict()
    return added


def _training_facts(config: dict) -> list:
    """DreamBooth's instance prompt is the trigger word: a fact found by training (it ranks with the file's
    metadata), not the user's override (passed as ``trigger_words`` it would read "set by you" and outrank
    later detection)."""
    from lorahub_cli.ingest import Fact

    if config.get("method") in ("ti", "pivotal"):   # the trained token is the trigger
        return [Fact("trigger_word", config.get("token") or f"<{config.get('name')}>", TRIGGER_SOURCE)]
    prompt = (config.get("instance_prompt") or "").strip()
    if config.get("mode") != "dreambooth" or not prompt:
        return []
    return [Fact("trigger_word", prompt, TRIGGER_SOURCE)]


@contextmanager
def _opened(registry: Optional[Any], factory) -> Iterator[Any]:
    """The caller's registry as it is, or our own, closed afterwards."""
    if registry is not None:
        yield registry
        return
    with factory() as own:
        yield own
