"""`lora merge` on files of different layouts, into a file or the library, and what it refuses."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lorahub_cli.errors import AlreadyExists, NotFound, UsageError
from lorahub_cli.inspect.hashing import sha256_file
from lorahub_cli.merge.job import merge_files, parse_input
from tests.fixtures.adapters import FIXTURE_CACHE, write_adapter
from tests.merge.helpers import fixture_adapter, probe, probe_sum, probes, rel_err

# (layout, rank, alpha, seed, components): three eras of SD1.5 LoRA files
LAYOUTS = [("kohya", 8, 3.0, 1, None), ("diffusers-old", 4, None, 2, ["unet"]), ("peft", 2, 4.0, 3, ["unet"])]
WEIGHTS = [0.7, -0.5, 1.2]


@pytest.fixture
def home(tmp_home):
    """An empty library whose module-table cache is warm (as after a first use), seeded from the fixtures' cache,
    so each test does not rebuild SD1.5's tables from the configs."""
    shutil.copytree(FIXTURE_CACHE, tmp_home / "cache" / "modules", dirs_exist_ok=True)
    return tmp_home


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    paths = []
    for fmt, rank, alpha, seed, comps in LAYOUTS:
        name = "adapter_model.safetensors" if fmt == "peft" else f"{fmt}.safetensors"   # peft: its own folder
        paths.append(write_adapter(root / fmt / name, "sd15", fmt, rank=rank, alpha=alpha, seed=seed,
                                   components=comps))
    return paths


@pytest.mark.parametrize("spec, expected", [
    ("style.safetensors:0.7", ("style.safetensors", 0.7)),
    ("style.safetensors", ("style.safetensors", 1.0)),
    (r"C:\loras\style.safetensors:-0.5", (r"C:\loras\style.safetensors", -0.5)),
    (r"C:\loras\style.safetensors", (r"C:\loras\style.safetensors", 1.0)),
    ("author:style", ("author:style", 1.0)),
    ("author:style:.25", ("author:style", 0.25)),
    ("abc123:1e-1", ("abc123", 0.1)),
    ("style:nan", ("style:nan", 1.0)),
])
def test_only_a_trailing_number_is_a_weight(spec, expected):
    assert parse_input(spec) == expected


def test_an_existing_file_named_like_a_weight_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd:2").write_bytes(b"")
    assert parse_input("odd:2") == ("odd:2", 1.0)
    assert parse_input("other:2") == ("other", 2.0)


def test_kohya_diffusers_old_and_peft_files_merge_exactly(files, tmp_path, home):
    from lorahub_cli.convert.load import load_adapter

    out = tmp_path / "merged.safetensors"
    specs = [f"{p}:{w}" for p, w in zip(files, WEIGHTS)]
    outcome = merge_files(specs, str(out))
    merged = load_adapter(out)
    # the inputs read independently of the conversion code (same seeds, the fixtures' own key map)
    inputs = [fixture_adapter("sd15", fmt, rank=r, alpha=a, seed=s, components=c, dtype="float32")
              for fmt, r, a, s, c in LAYOUTS]
    assert set(merged.modules) == set().union(*(a.modules for a in inputs))
    assert any(k.startswith("text_encoder.") for k in merged.modules)       # only the kohya file has them
    worst = 0.0
    for key, pair in merged.modules.items():
        x = probes(pair.down[0].numel())
        worst = max(worst, rel_err(probe(pair, x), probe_sum(inputs, WEIGHTS, key, x)))
    assert worst < 1e-6                                                     # float32 file
    assert merged.family == outcome.family == "sd1"
    record = json.loads(merged.metadata["lorahub.merge"])
    assert record["method"] == "stack" and record["family"] == "sd1"
    # the file's record and the --json outcome agree on the ranks (stack: no target, so the largest one)
    assert record["ranks"] == outcome.ranks and record["rank"] == outcome.rank == max(outcome.ranks) == 8 + 4 + 2
    assert [(i["name"], i["sha256"], i["weight"]) for i in record["inputs"]] == \
        [(p.name, sha256_file(p), w) for p, w in zip(files, WEIGHTS)]
    assert merged.metadata["modelspec.merged_from"] == ", ".join(p.name for p in files)
    assert outcome.sha256 == sha256_file(out)


def test_svd_output_holds_the_reported_rank_and_error(files, tmp_path, home):
    from lorahub_cli.convert.load import load_adapter

    out = tmp_path / "small.safetensors"
    outcome = merge_files([str(p) for p in files[:2]], str(out), method="svd", rank=3, dtype="fp16")
    merged = load_adapter(out)
    assert {p.rank for p in merged.modules.values()} == {3} and outcome.ranks == [3]
    assert {p.up.dtype for p in merged.modules.values()} == {torch.float16}
    assert 0 < outcome.truncation["relative_error"] < 1


def test_existing_output_is_not_replaced_without_force(files, tmp_path, home):
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(AlreadyExists):
        merge_files([str(files[0])], str(out))
    assert out.read_bytes() == b"keep me"
    merge_files([str(files[0])], str(out), force=True)
    assert out.stat().st_size > 1000


def test_a_missing_input_is_not_found(tmp_path, home):
    with pytest.raises(NotFound, match="no such file"):
        merge_files([str(tmp_path / "nope.safetensors")], str(tmp_path / "o.safetensors"))
    with pytest.raises(NotFound, match="neither a file nor an adapter in the library"):
        merge_files(["no-such-entry"], str(tmp_path / "o.safetensors"))


@pytest.mark.parametrize("suffix", ["abc", "nan", "inf", "1e309", ""])
def test_a_weight_that_is_not_a_finite_number_is_a_usage_error(files, tmp_path, home, suffix):
    # the text before the last ':' is a real file, so the rest was meant as its weight
    out = tmp_path / "o.safetensors"
    with pytest.raises(UsageError, match="must be a finite number"):
        merge_files([f"{files[0]}:{suffix}"], str(out))
    assert not out.exists()
    if suffix != "1e309":   # a number that is out of range is refused whatever it weights
        with pytest.raises(NotFound, match="neither a file nor an adapter"):   # names nothing either way
            merge_files([f"no-such-entry:{suffix}"], str(out))


def test_all_zero_weights_are_a_usage_error_and_write_nothing(files, tmp_path, home, run_cli):
    out = tmp_path / "zero.safetensors"
    res = run_cli("merge", f"{files[0]}:0", f"{files[1]}:0", "-o", out, "--json")
    assert res.returncode == 2, res
    error = res.json()["error"]
    assert error["code"] == "usage" and "every input has weight 0" in error["message"]
    assert not out.exists()


def test_a_library_name_with_a_bad_weight_is_a_usage_error(files, tmp_path, home):
    from registry.api import Registry

    from lorahub_cli.ingest import ingest

    with Registry(home=home) as reg:
        ingest(files[0], reg, name="sd-k")
        with pytest.raises(UsageError, match="weight 'abc' of sd-k must be a finite number"):
            merge_files(["sd-k:abc"], str(tmp_path / "o.safetensors"), registry=reg)
        with pytest.raises(UsageError, match="must be a finite number"):
            merge_files(["sd-k:nan"], str(tmp_path / "o.safetensors"), registry=reg)


def test_cli_merges_library_entries_into_the_library(files, home, run_cli):
    added = run_cli("add", files[0], "--name", "style")
    assert added.returncode == 0, added
    res = run_cli("merge", "style:0.5", f"{files[1]}:-1", "-o", "combo", "--method", "svd", "--rank", "4", "--json")
    assert res.returncode == 0, res
    out = res.json()
    assert out["in_library"] and out["output"] == "combo" and out["method"] == "svd" and out["rank"] == 4
    assert [(i["name"], i["weight"], i["in_library"]) for i in out["inputs"]] == \
        [("style", 0.5, True), (files[1].name, -1.0, False)]
    show = run_cli("show", "combo", "--json")
    assert show.returncode == 0, show
    entry = show.json()
    merged_from = [s for s in entry["sources"] if s["kind"] == "merged"]
    assert len(merged_from) == 1 and "0.5 x style" in merged_from[0]["path"] and files[1].name in merged_from[0]["path"]
    record = json.loads(entry["metadata"]["lorahub.merge"])
    assert [i["name"] for i in record["inputs"]] == ["style", files[1].name]
    assert entry["family"] == "sd1" and entry["rank"] == 4 and entry["sha256"] == out["sha256"]
    assert run_cli("doctor", "--json").json() == []   # the merge's work folder went with it
    with pytest.raises(AlreadyExists, match="already has an adapter named 'combo'"):
        merge_files([str(files[0])], "combo")


def test_cli_refuses_a_family_mix_naming_the_odd_file(files, tmp_path, home, run_cli):
    xl = write_adapter(tmp_path / "xl-face.safetensors", "sdxl", "kohya", rank=1, seed=5, components=["unet"])
    res = run_cli("merge", files[0], files[1], xl, "-o", tmp_path / "m.safetensors", "--json")
    assert res.returncode == 1, res
    error = res.json()["error"]
    assert error["code"] == "incompatible"
    assert error["message"].startswith("xl-face.safetensors is a sdxl adapter")
    assert not (tmp_path / "m.safetensors").exists()
