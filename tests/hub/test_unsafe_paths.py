"""Hub file names that would land outside the repository's folder (issue 13 C4): `unsafe-path`, before any
download, whether the name comes from the repo's listing, from --file or from SOURCE itself.

The real huggingface_hub client against the local fake Hub; before the fix these were `internal` ValueErrors
raised by the client in the middle of the download.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lorahub_cli.errors import UnsafePath
from lorahub_cli.sources import download_hub, fetch, parse_source, resolve_hub
from lorahub_cli.sources.repo_path import is_safe_repo_path
from tests.hubserver import lora_safetensors

WEIGHTS = "pytorch_lora_weights.safetensors"


def pull(text: str, tmp_path: Path, **options):
    return fetch(parse_source(text, **options), staging_dir=tmp_path / "staging")


def downloads(hub) -> list:
    return hub.requests_to("/resolve/") + hub.requests_to("/cdn/")


@pytest.mark.parametrize("name", ["../x.safetensors", "/abs/x.safetensors", "sub/../../x.safetensors",
                                  "C:/x.safetensors", "sub/C:x.safetensors", "..\\x.safetensors"])
def test_an_unsafe_name_in_the_listing_is_refused_before_any_download(hub, hf_env, tmp_path, name):
    hub.create_repo("o/evil", {name: lora_safetensors()})
    with pytest.raises(UnsafePath) as caught:
        pull("o/evil", tmp_path)
    assert caught.value.code == "unsafe-path" and caught.value.exit_code == 1
    assert repr(name) in caught.value.message
    assert downloads(hub) == [] and not (tmp_path / "x.safetensors").exists()


def test_a_repo_with_one_unsafe_name_is_not_guessed_around_but_a_safe_file_can_be_named(hub, hf_env, tmp_path):
    weights = lora_safetensors(seed=1)
    hub.create_repo("o/mixed", {WEIGHTS: weights, "../x.safetensors": lora_safetensors(seed=2)})
    with pytest.raises(UnsafePath) as caught:
        pull("o/mixed", tmp_path)
    assert f"--file {WEIGHTS}" in caught.value.hint and downloads(hub) == []
    assert pull("o/mixed", tmp_path, file=WEIGHTS).path.read_bytes() == weights


@pytest.mark.parametrize("text, options", [
    ("o/ok", {"file": "../x.safetensors"}),
    ("o/ok", {"file": "a/../../x.safetensors"}),
    ("o/ok", {"file": "C:\\x.safetensors"}),
    ("hf://o/ok/../x.safetensors", {}),
    ("{endpoint}/o/ok/resolve/main/..%2Fx.safetensors", {}),
])
def test_an_unsafe_file_asked_for_is_refused_before_the_hub_is_asked(hub, hub_server, hf_env, tmp_path, text,
                                                                     options):
    # the repo really holds the name, so only our check stands between it and the client's ValueError
    hub.create_repo("o/ok", {"../x.safetensors": lora_safetensors(), "a.safetensors": lora_safetensors()})
    with pytest.raises(UnsafePath):
        pull(text.format(endpoint=hub_server.url), tmp_path, **options)
    assert hub.requests == []


def test_the_check_reads_names_as_posix_and_windows_paths():
    for safe in ("x.safetensors", "sub/x.safetensors", "a..b.safetensors", "sub/..x/y.bin", ".../x.bin"):
        assert is_safe_repo_path(safe), safe
    for unsafe in ("", "..", "../x", "a/../b", "/x", "\\x", "a\\..\\b", "C:x", "C:\\x", "c:/x", "sub/D:x",
                   "\\\\host\\share\\x", "//host/share/x", "x\0.safetensors"):
        assert not is_safe_repo_path(unsafe), unsafe


def test_lora_pull_reports_unsafe_path_with_its_code(hub, hf_env, tmp_home, run_cli):
    hub.create_repo("o/evil", {"../x.safetensors": lora_safetensors()})
    result = run_cli("pull", "o/evil", "--json")
    assert result.returncode == 1, result
    assert result.json()["error"]["code"] == "unsafe-path", result
    assert "Traceback" not in result.stderr and downloads(hub) == []


def test_a_plan_built_by_hand_is_checked_too(hub, hf_env, tmp_path):
    # the Python API takes a HubPlan as well; the client would raise a bare ValueError mid-download
    hub.create_repo("o/evil", {"../x.safetensors": lora_safetensors(), "a.safetensors": lora_safetensors()})
    plan = replace(resolve_hub(parse_source("o/evil", file="a.safetensors")), path_in_repo="../x.safetensors")
    with pytest.raises(UnsafePath):
        download_hub(plan)
    assert downloads(hub) == []
