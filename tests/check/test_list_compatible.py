"""`lora list --compatible-with BASE` keeps exactly the entries `lora check` calls compatible."""

from __future__ import annotations

import json

from tests.fixtures.adapters import write_adapter


def test_list_compatible_with_agrees_with_check(tmp_home, tmp_path, run_cli):
    src = tmp_path / "src"
    write_adapter(src / "style15.safetensors", "sd15", "kohya")
    write_adapter(src / "xl.safetensors", "sdxl", "diffusers")
    write_adapter(src / "te15.safetensors", "sd15", "diffusers", components=["text_encoder"])
    assert run_cli("add", src).returncode == 0

    def names(*args):
        result = run_cli("list", *args, "--json")
        assert result.returncode == 0, result
        return sorted(r["name"] for r in result.json())

    assert names("--compatible-with", "sdxl") == ["xl"]
    assert names("--compatible-with", "sd15") == ["style15", "te15"]
    assert names("--compatible-with", "sdxl", "--include-partial") == ["te15", "xl"]  # CLIP-L is SDXL's TE 1
    checked = run_cli("check", "style15", "xl", "te15", "--base", "sdxl", "--json").json()
    assert sorted(c["adapter"] for c in checked if c["verdict"] == "compatible") == ["xl"]


def test_the_verdict_cache_lives_in_the_home_given_by_flag(tmp_home, tmp_path, run_cli):
    """`--home H` keeps the per-base verdict cache under H, not under $LORAHUB_HOME."""
    other = tmp_path / "other-home"
    write_adapter(tmp_path / "src" / "style15.safetensors", "sd15", "kohya")
    assert run_cli("--home", other, "add", tmp_path / "src").returncode == 0
    listed = run_cli("--home", other, "list", "--compatible-with", "sd15", "--json")
    assert [r["name"] for r in listed.json()] == ["style15"]
    assert len(list((other / "cache" / "compat").glob("*.json"))) == 1
    assert not (tmp_home / "cache" / "compat").exists()
