"""`lora lock` and `lora install` end to end: a real library, real safetensors files, the local Hub server."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.hubserver import lora_safetensors

WEIGHTS = "pytorch_lora_weights.safetensors"


def _home(tmp_path: Path, name: str) -> dict:
    return {"LORAHUB_HOME": str(tmp_path / name)}


@pytest.fixture
def locked(hub, hf_env, run_cli, tmp_path):
    """Two Hub adapters pulled into a first library, tagged, and locked to lora.lock."""
    hub.create_repo("o/detail", {WEIGHTS: lora_safetensors(seed=1)})
    hub.create_repo("o/style", {"style.safetensors": lora_safetensors(seed=2)})
    first = _home(tmp_path, "first")
    for repo in ("o/detail", "o/style"):
        assert run_cli("pull", repo, "--tag", "set", env=first).returncode == 0
    lock = tmp_path / "lora.lock"
    made = run_cli("lock", "--tag", "set", "-o", lock, "--json", env=first)
    assert made.returncode == 0, made
    return lock


def test_lock_lists_each_entry_with_its_hub_source_and_reads_back(locked, run_cli, tmp_path):
    import tomllib

    data = tomllib.loads(locked.read_text())
    assert data["version"] == 1
    by_name = {a["name"]: a for a in data["adapters"]}
    assert sorted(by_name) == ["detail", "style"]
    src = by_name["style"]["sources"][0]
    assert (src["kind"], src["repo"], src["file"], len(src["commit"])) == ("hub", "o/style", "style.safetensors", 40)
    assert by_name["detail"]["kind"] == "lora" and len(by_name["detail"]["sha256"]) == 64


def test_install_fetches_into_a_new_library_then_is_idempotent(locked, hub, run_cli, tmp_path):
    second = _home(tmp_path, "second")
    got = run_cli("install", locked, "--json", env=second)
    assert got.returncode == 0, got
    assert sorted((o["lock_name"], o["status"], o["name"]) for o in got.json()) == [
        ("detail", "fetched", "detail"), ("style", "fetched", "style")]
    served = len(hub.requests)
    again = run_cli("install", locked, "--json", env=second)
    assert again.returncode == 0
    assert {o["status"] for o in again.json()} == {"present"}
    assert len(hub.requests) == served      # idempotent: nothing asked of the Hub


def test_install_uses_one_request_per_missing_hub_file_and_no_api_call(locked, hub, run_cli, tmp_path):
    before = len(hub.requests)
    fresh = {**_home(tmp_path, "third"), "HF_HOME": str(tmp_path / "fresh-hf")}   # nothing cached yet
    assert run_cli("install", locked, env=fresh).returncode == 0
    paths = [r.path for r in hub.requests[before:]]
    assert not [p for p in paths if p.startswith("/api/")]
    assert len([p for p in paths if "/resolve/" in p]) >= 2


def test_offline_install_only_checks_what_is_there(locked, hub, run_cli, tmp_path):
    before = len(hub.requests)
    got = run_cli("install", locked, "--offline", "--json", env=_home(tmp_path, "empty"))
    assert got.returncode == 1
    assert {o["status"] for o in got.json()} == {"missing"}
    assert len(hub.requests) == before
    assert run_cli("list", "--json", env=_home(tmp_path, "empty")).json() == []


def test_a_hash_the_bytes_do_not_match_is_hash_mismatch_and_nothing_is_stored(locked, run_cli, tmp_path, hf_cache):
    text = locked.read_text()
    import tomllib

    sha = tomllib.loads(text)["adapters"][0]["sha256"]
    bad = tmp_path / "bad.lock"
    bad.write_text(text.replace(sha, "0" * 64))
    home = _home(tmp_path, "victim")
    got = run_cli("install", bad, "--json", env=home)
    assert got.returncode == 1
    failed = [o for o in got.json() if o["status"] == "failed"]
    assert [o["error"]["code"] for o in failed] == ["hash-mismatch"]
    names = [a["name"] for a in run_cli("list", "--json", env=home).json()]
    assert len(names) == 1                                    # the other entry still went in
    assert (hf_cache / "models--o--detail" / "blobs" / sha).is_file()   # a wrong lock costs no cache file


def test_a_taken_name_is_never_renamed_the_fetched_entry_gets_another(locked, run_cli, tmp_path):
    home = _home(tmp_path, "mine")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(lora_safetensors(seed=9))
    assert run_cli("add", mine, "--name", "detail", env=home).returncode == 0
    got = run_cli("install", locked, "--json", env=home)
    by_lock = {o["lock_name"]: o for o in got.json()}
    assert by_lock["detail"]["status"] == "fetched" and by_lock["detail"]["name"] == "detail-2"
    shown = run_cli("show", "detail", "--json", env=home).json()
    assert shown["sources"][0]["path"] == str(mine.resolve())


def test_present_under_another_name_is_present_and_verify_rehashes(locked, run_cli, tmp_path):
    home = _home(tmp_path, "again")
    assert run_cli("install", locked, env=home).returncode == 0
    assert run_cli("rename", "style", "mine", env=home).returncode == 0
    got = {o["lock_name"]: o for o in run_cli("install", locked, "--json", env=home).json()}
    assert (got["style"]["status"], got["style"]["name"]) == ("present", "mine")
    # flip one byte of the stored copy (same size): a stat passes, --verify finds it
    blob = Path(run_cli("show", "mine", "--json", env=home).json()["path"])
    os.chmod(blob, 0o644)
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 1
    blob.write_bytes(bytes(raw))
    assert run_cli("install", locked, env=home).returncode == 0
    verified = {o["lock_name"]: o for o in run_cli("install", locked, "--verify", "--json", env=home).json()}
    assert verified["style"]["error"]["code"] == "damaged-file"


def test_unknown_format_version_is_refused(tmp_path, run_cli):
    lock = tmp_path / "future.lock"
    lock.write_text('version = 2\n[[adapters]]\nname = "x"\nsha256 = "' + "a" * 64 + '"\n')
    got = run_cli("install", lock, "--json")
    assert got.returncode == 1 and got.json()["error"]["code"] == "unknown-lock-version"
    lock.write_text("not = [toml")
    assert run_cli("install", lock, "--json").json()["error"]["code"] == "bad-lock"


def test_an_entry_whose_every_source_fails_says_each(tmp_path, run_cli):
    import socket

    with socket.socket() as s:   # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lock = tmp_path / "gone.lock"
    lock.write_text('version = 1\n[[adapters]]\nname = "gone"\nsha256 = "' + "b" * 64 + '"\n'
                    f'[[adapters.sources]]\nkind = "url"\nurl = "http://127.0.0.1:{port}/gone.safetensors"\n'
                    f'[[adapters.sources]]\nkind = "path"\npath = "{tmp_path / "nowhere.safetensors"}"\n'
                    '[[adapters]]\nname = "nosource"\nsha256 = "' + "c" * 64 + '"\n')
    got = run_cli("install", lock, "--json")
    assert got.returncode == 1
    by = {o["lock_name"]: o["error"] for o in got.json()}
    assert by["gone"]["code"] == "sources-failed" and "not-found" in by["gone"]["message"]
    assert by["nosource"]["code"] == "no-source"
    assert run_cli("list", "--json").json() == []


def test_lock_from_a_recipe_keeps_weights_base_and_the_recipes_sources(tmp_path, run_cli):
    import tomllib

    recipe = {"prompt": "a cat", "seed": 1, "steps": 2, "guidance": 7.0, "scheduler": "euler", "width": 64,
              "height": 64, "base": "tiny", "base_id": "o/tiny-base",
              "adapters": [{"name": "detail", "sha256": "d" * 64, "weight": 0.7,
                            "sources": [{"kind": "url", "url": "https://example.invalid/d.safetensors"},
                                        {"kind": "hub", "repo": "o/d", "file": "d.safetensors",
                                         "commit": "1" * 40}]}]}
    src = tmp_path / "recipe.json"
    src.write_text(json.dumps(recipe))
    out = tmp_path / "r.lock"
    assert run_cli("lock", "--from", src, "-o", out).returncode == 0
    data = tomllib.loads(out.read_text())
    assert (data["base"], data["base_id"]) == ("tiny", "o/tiny-base")
    (entry,) = data["adapters"]
    assert entry["weight"] == 0.7 and [s["kind"] for s in entry["sources"]] == ["hub", "url"]


def test_lock_refuses_to_overwrite_without_force(locked, run_cli, tmp_path):
    got = run_cli("lock", "--tag", "set", "-o", locked, "--json", env=_home(tmp_path, "first"))
    assert got.returncode == 1 and got.json()["error"]["code"] == "already-exists"


def test_sources_are_ordered_hub_first_and_a_printed_lock_is_the_file(hub, hf_env, run_cli, tmp_path):
    import tomllib

    data = lora_safetensors(seed=7)
    hub.create_repo("o/both", {WEIGHTS: data})
    local = tmp_path / "both.safetensors"
    local.write_bytes(data)
    assert run_cli("add", local, "--name", "both").returncode == 0
    assert run_cli("pull", "o/both").returncode == 0          # same bytes: this source is remembered too
    printed = run_cli("lock", "both")
    assert printed.returncode == 0
    (entry,) = tomllib.loads(printed.stdout)["adapters"]
    assert [s["kind"] for s in entry["sources"]] == ["hub", "path"]
    assert entry["sources"][1]["path"] == str(local.resolve())


def test_install_records_the_hub_card_at_the_locked_commit_as_pull_does(hub, hf_env, run_cli, tmp_path):
    from tests.hubserver import diffusers_card

    repo = hub.create_repo("o/carded", {"README.md": diffusers_card(instance_prompt="sks dog"),
                                 WEIGHTS: lora_safetensors(seed=7)})
    first = _home(tmp_path, "pulled")
    pulled = run_cli("pull", "o/carded", "--json", env=first)
    assert pulled.returncode == 0, pulled
    lock = tmp_path / "carded.lock"
    assert run_cli("lock", pulled.json()["name"], "-o", lock, env=first).returncode == 0
    # the card changes after the lock: install reads it at the locked commit, not at main
    repo.commit({"README.md": diffusers_card(instance_prompt="something else")})
    fresh = {**_home(tmp_path, "installed"), "HF_HOME": str(tmp_path / "fresh-hf")}
    got = run_cli("install", lock, "--json", env=fresh)
    assert got.returncode == 0 and got.json()[0]["status"] == "fetched", got
    installed = run_cli("show", got.json()[0]["name"], "--json", env=fresh).json()
    original = run_cli("show", pulled.json()["name"], "--json", env=first).json()
    assert installed["trigger_words"] == original["trigger_words"] == ["sks dog"]
    assert installed["trigger_word_sources"] == {"sks dog": "card:README.md@o/carded"}
    assert installed["license"] == original["license"] == "creativeml-openrail-m"


def test_install_of_a_repo_without_a_card_still_installs(hub, hf_env, run_cli, tmp_path):
    hub.create_repo("o/bare", {WEIGHTS: lora_safetensors(seed=8)})
    first = _home(tmp_path, "pulled")
    name = run_cli("pull", "o/bare", "--json", env=first).json()["name"]
    lock = tmp_path / "bare.lock"
    assert run_cli("lock", name, "-o", lock, env=first).returncode == 0
    got = run_cli("install", lock, "--json", env={**_home(tmp_path, "installed"), "HF_HOME": str(tmp_path / "h")})
    assert got.returncode == 0 and got.json()[0]["status"] == "fetched" and got.json()[0]["warnings"] == []


@pytest.mark.parametrize("point", ["before-commit", "after-commit"])
def test_an_install_killed_at_its_commit_leaves_nothing_half_installed(locked, run_cli, run_cli_subprocess,
                                                                      tmp_path, point):
    home = _home(tmp_path, "killed")
    killed = run_cli_subprocess("install", locked, "--json", env={**home, "LORAHUB_TEST_KILL_AT": point,
                                                                  "HF_HOME": str(tmp_path / "hf-killed")})
    assert killed.returncode == -9, killed
    listed = run_cli("list", "--json", env=home).json()
    # killed at the first batch's commit: before it nothing is recorded; after it, the whole first batch (one
    # entry or both: a batch is stored early when the next download is not finished yet)
    assert len(listed) == 0 if point == "before-commit" else len(listed) in (1, 2)
    for entry in listed:   # a record always has its bytes, intact
        shown = run_cli("show", entry["name"], "--json", env=home).json()
        assert hashlib.sha256(Path(shown["path"]).read_bytes()).hexdigest() == shown["sha256"]
    # what a kill can leave: blobs no record names yet (before the commit) and finished downloads in the
    # staging folder whose process is gone; doctor names both, and --fix removes them
    problems = [f["problem"] for f in run_cli("doctor", "--json", env=home).json()]
    assert set(problems) <= {"orphan-blob", "partial-download"}
    assert ("orphan-blob" in problems) == (point == "before-commit")
    run_cli("doctor", "--fix", env=home)   # (orphan blobs of a library with no record are kept: a wrong home?)
    assert "partial-download" not in [f["problem"] for f in run_cli("doctor", "--json", env=home).json()]
    again = run_cli("install", locked, "--json", env=home)
    assert again.returncode == 0
    statuses = sorted(o["status"] for o in again.json())
    assert statuses == sorted(["present"] * len(listed) + ["fetched"] * (2 - len(listed)))


def test_a_url_entry_locks_with_its_etag_and_installs_from_the_url(hub, hub_server, hf_env, run_cli, tmp_path):
    import tomllib

    data = lora_safetensors(seed=9)
    hub.add_static("files/web.safetensors", data)
    url = hub_server.static_url("files/web.safetensors")
    first = _home(tmp_path, "pulled")
    pulled = run_cli("pull", url, "--json", env=first)
    assert pulled.returncode == 0, pulled
    local = tmp_path / "web-copy.safetensors"
    local.write_bytes(data)
    assert run_cli("add", local, env=first).returncode == 0   # the same bytes from a path: a later hint
    lock = tmp_path / "web.lock"
    assert run_cli("lock", pulled.json()["name"], "-o", lock, env=first).returncode == 0
    (entry,) = tomllib.loads(lock.read_text())["adapters"]
    assert [s["kind"] for s in entry["sources"]] == ["url", "path"]
    etag = hub.static["files/web.safetensors"].etag
    assert (entry["sources"][0]["url"], entry["sources"][0]["etag"]) == (url, f'"{etag}"')
    local.unlink()   # only the URL can bring it back now
    home = _home(tmp_path, "installed")
    got = run_cli("install", lock, "--json", env=home)
    assert got.returncode == 0 and [(o["status"], o["source"]) for o in got.json()] == [("fetched", url)], got
    shown = run_cli("show", got.json()[0]["name"], "--json", env=home).json()
    assert hashlib.sha256(Path(shown["path"]).read_bytes()).hexdigest() == entry["sha256"] == shown["sha256"]
    staging = tmp_path / "installed" / "staging"
    assert not [p for p in staging.iterdir() if p.suffix in (".download", ".part")]   # the download was moved in


def test_a_batch_that_fails_as_a_whole_fails_each_of_its_entries_and_the_install_reports_them(
        locked, run_cli, tmp_path, monkeypatch):
    """A batch-level error (a full disk, a database that stays busy) used to abort the install with no report;
    each entry of the batch is now `failed` with that error's code, as install reports per entry."""
    import lorahub_cli.ingest as ingest_module
    from registry.errors import DiskFull

    def full(items, registry):
        raise DiskFull("no space left on the library's disk")

    monkeypatch.setattr(ingest_module, "ingest_many", full)
    got = run_cli("install", locked, "--json", env=_home(tmp_path, "second"))
    assert got.returncode == 1, got
    assert sorted((o["lock_name"], o["status"], o["error"]["code"]) for o in got.json()) == [
        ("detail", "failed", "disk-full"), ("style", "failed", "disk-full")]
