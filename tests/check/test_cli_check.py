"""`lora check` as users and scripts run it: JSON shape, human output, exit codes, library entries."""

from __future__ import annotations

from lorahub_cli.compat.engine import check, check_many
from lorahub_cli.compat.model import CheckFailure
from lorahub_cli.ingest import ingest
from registry.api import Registry


def test_json_array_and_exit_codes(home, run_cli, adapters, tmp_path):
    ok = run_cli("check", adapters["sd15"], adapters["sd15-diffusers"], "--base", "sd15", "--json")
    assert ok.returncode == 0, ok
    rows = ok.json()
    assert [r["adapter"] for r in rows] == [str(adapters["sd15"]), str(adapters["sd15-diffusers"])]
    for row in rows:
        assert {"adapter", "base", "verdict", "family", "coverage", "unmatched", "notes"} <= set(row)
        assert row["family"] == {**row["family"], "adapter": "sd1", "base": "sd1", "match": True}
        cov = row["coverage"]
        assert cov["matched"] == cov["total"] == sum(c["total"] for c in cov["per_component"].values())

    bad = tmp_path / "notes.safetensors"
    bad.write_text("not an adapter")
    mixed = run_cli("check", adapters["sd15-te"], bad, "--base", "sdxl", "--json")
    assert mixed.returncode == 1
    partial, failure = mixed.json()
    assert partial["verdict"] == "partial" and partial["unmatched"] == []
    assert failure == {"adapter": str(bad), "error": failure["error"]} and failure["error"]["code"] == "not-an-adapter-file"


def test_human_output_names_verdict_coverage_and_reasons(home, run_cli, adapters):
    out = run_cli("check", adapters["sd15"], "--base", "sdxl")
    assert out.returncode == 1
    text = out.stdout
    expected = check(str(adapters["sd15"]), "sdxl")
    te, unet = expected.per_component["text_encoder"], expected.per_component["unet"]
    assert "incompatible" in text and expected.summary.split(":")[0] in text
    assert f"unet {unet.matched}/{unet.total}, text_encoder {te.matched}/{te.total}" in text
    for reason in ("missing-module", "shape-mismatch", "family-mismatch"):
        assert reason in text      # one example of each reason is shown before the rest are counted
    assert "--json counts them by reason" in text and "in all:" in text


def test_unknown_base_is_one_error(home, run_cli, adapters):
    unknown = run_cli("check", adapters["sd15"], "--base", "not-a-base", "--json")
    assert unknown.returncode == 1 and unknown.json()["error"]["code"] == "not-found"


def test_library_entries_by_name_and_with_a_family_override(home, adapters):
    with Registry() as registry:
        ingest(adapters["sd15-te"], registry, name="te-style")
        result = check("te-style", "sdxl")
        assert result.adapter == "te-style" and result.verdict == "partial"
        assert result.path and result.path.startswith(str(home))     # read from the library's blob
        # the user says it is an SDXL file: their word wins over detection, and the verdict follows
        registry.set("te-style", family="sdxl")
    overridden = check("te-style", "sdxl")
    assert overridden.family.adapter == "sdxl" and overridden.family.adapter_evidence == "set by you"
    assert overridden.verdict == "compatible"
    results = list(check_many(["te-style", "nope"], "sd15"))
    assert results[0].verdict == "partial"          # an sdxl-labelled TE LoRA on SD1: shared CLIP-L only
    assert isinstance(results[1], CheckFailure) and results[1].error.code == "not-found"


def test_json_lists_the_first_few_unmatched_and_counts_them_all(home, run_cli, adapters):
    from lorahub_cli.compat.model import JSON_UNMATCHED_LIMIT

    result = run_cli("check", adapters["sd15"], "--base", "sdxl", "--json")
    assert result.returncode == 1, result
    row = result.json()[0]
    counted = sum(row["coverage"]["unmatched_by_reason"].values())
    assert counted == row["coverage"]["total"] - row["coverage"]["matched"] > JSON_UNMATCHED_LIMIT
    assert len(row["unmatched"]) == JSON_UNMATCHED_LIMIT
    assert all({"key", "reason"} <= set(u) for u in row["unmatched"])
