"""``ingest``: the one way into the library -- staging, one merge of facts by one precedence (user > file
metadata > sidecar > card or API), a typed source kind -- with real safetensors files, real sidecars and a
real SQLite library. Also: nothing else in lorahub_cli writes a record or a blob, and the registry imports
nothing from lorahub_cli."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lorahub_cli.errors import UsageError
from lorahub_cli.ingest import Fact, card_facts, fact_rank, ingest, merge_facts
from lorahub_cli.sources.model import CardFacts
from registry.records import SOURCE_KINDS, SourceRecord
from tests.registry.helpers import write_kohya_sd1

REPO = Path(__file__).resolve().parent.parent
HUB_CARD = "card:README.md@someone/pixel"


@pytest.fixture
def reg(tmp_home):
    from registry.api import Registry

    with Registry(home=tmp_home) as registry:
        yield registry


def _adapter_with_sidecar(folder: Path) -> Path:
    """A kohya file whose header names a base model, a trigger phrase and a license, beside a README that
    says other things (the file's own header must win over it)."""
    path = write_kohya_sd1(folder / "pixel.safetensors", seed=1, metadata={
        "ss_sd_model_name": "runwayml/stable-diffusion-v1-5", "modelspec.trigger_phrase": "pxart",
        "modelspec.license": "mit"})
    (folder / "README.md").write_text("---\nbase_model: other/base\ninstance_prompt: sks style\n"
                                      "license: apache-2.0\ntags: [pixel]\n---\n# Pixel\n")
    return path


def _hub_card() -> CardFacts:
    return CardFacts(source=HUB_CARD, base_model=["hub/base"], trigger_words=["card word", "pxart"],
                     tags=["Pixel", "hub-tag"], license="openrail")


def test_facts_merge_once_by_source_precedence(reg, tmp_path):
    path = _adapter_with_sidecar(tmp_path / "src")
    result = ingest(path, reg, facts=card_facts(_hub_card()))
    e = reg.get(result.name)
    assert (e.base_model, e.base_model_source) == ("runwayml/stable-diffusion-v1-5", "metadata:ss_sd_model_name")
    assert (e.license, e.license_source) == ("mit", "metadata:modelspec.license")
    assert e.trigger_words == ["pxart", "sks style", "card word"]    # header, sidecar, card: each once
    assert e.trigger_word_sources == {"pxart": "metadata:modelspec.trigger_phrase", "sks style": "card:README.md",
                                      "card word": HUB_CARD}
    assert e.tags == ["pixel", "hub-tag"]                               # "Pixel" is the sidecar's "pixel" again


def test_the_users_words_win_and_the_detected_ones_are_kept(reg, tmp_path):
    path = _adapter_with_sidecar(tmp_path / "src")
    result = ingest(path, reg, trigger_words=["mine"], tags=["fav"], facts=card_facts(_hub_card()))
    e = reg.get(result.name)
    assert e.trigger_words == ["mine"] and e.overrides == {"trigger_words": ["mine"]}
    assert e.detected["trigger_words"] == ["pxart", "sks style", "card word"]
    assert e.tags[0] == "fav" and e.tag_sources["fav"] == "user"


def test_a_card_fills_in_what_the_file_does_not_say(reg, tmp_path):
    path = write_kohya_sd1(tmp_path / "bare.safetensors", seed=2)
    e = reg.get(ingest(path, reg, facts=card_facts(_hub_card())).name)
    assert (e.base_model, e.base_model_source) == ("hub/base", HUB_CARD)
    assert (e.license, e.license_source) == ("openrail", HUB_CARD)


def test_merge_facts_ranks_by_source_not_by_order():
    facts = [Fact("base_model", "from/card", HUB_CARD), Fact("base_model", "from/sidecar", "card:README.md"),
             Fact("trigger_word", "c", "api:civitai"), Fact("trigger_word", "b", "adapter_config:x.json"),
             Fact("trigger_word", "a", "metadata:ss_tag_frequency"), Fact("trigger_word", "u", "user"),
             Fact("trigger_word", "a", HUB_CARD), Fact("base_model", "from/header", "metadata:ss_sd_model_name")]
    merged = merge_facts(facts)
    assert merged.base_model == Fact("base_model", "from/header", "metadata:ss_sd_model_name")
    assert [(f.value, f.source) for f in merged.trigger_words] == [
        ("u", "user"), ("a", "metadata:ss_tag_frequency"), ("b", "adapter_config:x.json"), ("c", "api:civitai")]
    assert [fact_rank(s) for s in ("user", "training", "metadata:k", "card:README.md", HUB_CARD, "api:x")] == \
        [0, 1, 1, 2, 3, 3]


def test_merge_facts_is_linear_in_a_huge_card():
    # issue 13 H3: 100k widget prompts made `pull` quadratic; one pass with a set now
    facts = [Fact("trigger_word", f"w{i % 50_000}", HUB_CARD) for i in range(100_000)]
    assert len(merge_facts(facts).trigger_words) == 50_000


def test_a_training_run_s_words_rank_with_the_file_s_own(reg, tmp_path):
    path = write_kohya_sd1(tmp_path / "trained.safetensors", seed=3)
    result = ingest(path, reg, source=SourceRecord(kind="trained", path=str(tmp_path)),
                    facts=[Fact("trigger_word", "lower wow", "training"), Fact("trigger_word", "x", HUB_CARD)])
    e = reg.get(result.name)
    assert e.trigger_words == ["lower wow", "x"] and e.trigger_word_sources["lower wow"] == "training"
    assert e.sources[0].kind == "trained" and "trigger_words" not in e.overrides


def test_source_kinds_are_a_closed_vocabulary(reg, tmp_path):
    assert {"local", "url", "hub", "converted", "merged", "trained"} <= set(SOURCE_KINDS)   # every kind in use
    path = write_kohya_sd1(tmp_path / "a.safetensors", seed=4)
    with pytest.raises(UsageError, match="unknown source kind 'ftp'"):
        ingest(path, reg, source=SourceRecord(kind="ftp", url="ftp://x/a.safetensors"))  # type: ignore[arg-type]
    assert reg.list() == [] and not reg.store.objects.exists()


def test_the_registry_takes_only_plain_records(reg, tmp_path):
    from lorahub_cli.inspect import inspect_file

    path = write_kohya_sd1(tmp_path / "a.safetensors", seed=5)
    with pytest.raises(TypeError, match="AdapterRecord"):
        reg.add(path, inspect_file(path))
    assert reg.list() == []


def test_the_registry_vocabulary_matches_inspection():
    from lorahub_cli.inspect.model import FAMILIES as INSPECTED
    from registry.records import FAMILIES

    assert FAMILIES == INSPECTED


# the calls that write a record or a blob; only ingest (and the registry itself) may make them
_WRITES = re.compile(r"\b(?:registry|reg|self\.registry|lib\.registry|self\._registry)\.add(?:_many)?\(|\bstore\.put\(")


def test_nothing_but_ingest_writes_to_the_library():
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in sorted((REPO / "lorahub_cli").rglob("*.py"))
                 if p.name != "ingest.py"
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if _WRITES.search(line)]
    assert offenders == []


def test_the_registry_imports_nothing_from_lorahub_cli():
    code = ("import sys, registry.api, registry.writes, registry.reads, registry.doctor, registry.store, "
            "registry.records, registry.names, registry.db\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lorahub_cli'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_a_finished_run_goes_in_through_ingest_with_its_instance_prompt(reg, tmp_path):
    from lorahub_cli.errors import AlreadyExists
    from lorahub_cli.train.register import check_name_free, register_result
    from lorahub_cli.train.result import TrainResult

    run = tmp_path / "run"
    adapter = write_kohya_sd1(run / "pytorch_lora_weights.safetensors", seed=6)
    result = TrainResult(name="dog", run_dir=str(run), adapter=str(adapter), card=None, steps=1, resumed_from=None,
                         world_size=1, final_loss=None, elapsed_s=0.0, samples_per_s=None, steps_per_s=None,
                         cache="", mixed_precision="no", device="cpu",
                         config={"mode": "dreambooth", "instance_prompt": "sks dog", "tags": ["pets"]})
    check_name_free("dog", registry=reg)
    added = register_result(result, registry=reg)
    e = reg.get("dog")
    assert added.status == "added" and result.library["name"] == "dog"
    assert e.trigger_words == ["sks dog"] and e.trigger_word_sources == {"sks dog": "training"}
    assert e.tags == ["trained", "pets"] and e.sources[0].kind == "trained" and e.sources[0].path == str(run)
    with pytest.raises(AlreadyExists):
        check_name_free("dog")   # its own registry (the test's home), opened and closed
