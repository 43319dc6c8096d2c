"""How `lora install` fetches a Hub entry the HF cache lacks: one GET at the locked commit, hashed as it
arrives into the library's staging folder, the user's token sent to the Hub's host only."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.hubserver import HubServer, lora_safetensors

WEIGHTS = "pytorch_lora_weights.safetensors"


def _lock(path: Path, entries: list[tuple[str, str, str, str, str]]) -> Path:
    """A lock of (name, sha256, repo, file, commit) Hub entries, written as `lora lock` writes one."""
    from lorahub_cli.lock.model import LockEntry, LockFile, LockSource
    from lorahub_cli.lock.toml import dumps

    path.write_text(dumps(LockFile(entries=[
        LockEntry(name=name, sha256=sha, sources=[LockSource("hub", repo=repo, file=file, commit=commit)])
        for name, sha, repo, file, commit in entries])))
    return path


def _repo(hub, repo_id: str, data: bytes, **kwargs) -> tuple[str, str]:
    """(commit, sha256) of a new repo holding ``data`` as its weights."""
    repo = hub.create_repo(repo_id, {WEIGHTS: data}, **kwargs)
    return repo.resolve("main"), hashlib.sha256(data).hexdigest()


def _staging(home: Path) -> list[Path]:
    staging = home / "staging"
    return [p for p in staging.iterdir() if p.is_file()] if staging.is_dir() else []


def test_a_missing_file_is_one_get_at_the_locked_commit_and_lands_in_the_library_only(hub, hf_env, hf_cache,
                                                                                       run_cli, tmp_path):
    data = lora_safetensors(seed=3)
    commit, sha = _repo(hub, "o/one", data)
    lock = _lock(tmp_path / "one.lock", [("one", sha, "o/one", WEIGHTS, commit)])
    home = tmp_path / "lib"
    before = len(hub.requests)
    got = run_cli("install", lock, "--json", env={"LORAHUB_HOME": str(home)})
    assert got.returncode == 0, got
    assert [(o["status"], o["name"]) for o in got.json()] == [("fetched", "one")]
    asked = [(r.method, r.path) for r in hub.requests[before:]]
    weights = [a for a in asked if a[1].endswith(WEIGHTS)]
    assert weights == [("GET", f"/o/one/resolve/{commit}/{WEIGHTS}")]   # no HEAD, no API call, one GET
    assert not [a for a in asked if a[1].startswith("/api/")]
    shown = run_cli("show", "one", "--json", env={"LORAHUB_HOME": str(home)}).json()
    assert hashlib.sha256(Path(shown["path"]).read_bytes()).hexdigest() == sha
    assert shown["sources"][0]["repo"] == "o/one" and shown["sources"][0]["revision"] == commit
    assert not (hf_cache / "models--o--one").exists()   # the bytes live once: in the library
    assert _staging(home) == []                          # the staged download was moved in, not left


def test_a_file_the_hf_cache_holds_is_linked_from_there_without_a_download(hub, hf_env, hf_cache, run_cli,
                                                                           tmp_path):
    from huggingface_hub import hf_hub_download

    data = lora_safetensors(seed=4)
    commit, sha = _repo(hub, "o/cached", data)
    hf_hub_download("o/cached", WEIGHTS, revision=commit, cache_dir=hf_cache,   # as diffusers would have
                    endpoint=hf_env["HF_ENDPOINT"])
    lock = _lock(tmp_path / "c.lock", [("cached", sha, "o/cached", WEIGHTS, commit)])
    before = len(hub.requests_to(f"/resolve/{commit}/{WEIGHTS}"))
    got = run_cli("install", lock, "--json", env={"LORAHUB_HOME": str(tmp_path / "lib")})
    assert got.returncode == 0 and got.json()[0]["status"] == "fetched", got
    assert len(hub.requests_to(f"/resolve/{commit}/{WEIGHTS}")) == before   # not downloaded again


def test_a_gated_file_behind_a_cdn_sends_the_token_to_the_hub_only(hf_env, run_cli, tmp_path, monkeypatch):
    with HubServer(lfs_redirect=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        data = lora_safetensors(seed=5)
        commit, sha = _repo(server.hub, "o/gated", data, gated=True, allowed_tokens=("hf_secret_token",))
        lock = _lock(tmp_path / "g.lock", [("gated", sha, "o/gated", WEIGHTS, commit)])

        refused = run_cli("install", lock, "--json", env={"LORAHUB_HOME": str(tmp_path / "a")})
        assert refused.returncode == 1
        (outcome,) = refused.json()
        assert outcome["status"] == "failed" and outcome["error"]["code"] == "gated"
        assert "HF_TOKEN" in outcome["error"]["hint"]

        token = {"LORAHUB_HOME": str(tmp_path / "b"), "HF_TOKEN": "hf_secret_token"}
        got = run_cli("install", lock, "--json", env=token)
        assert got.returncode == 0 and got.json()[0]["status"] == "fetched", got
        assert "hf_secret_token" not in got.stdout + got.stderr
        hub_get = server.hub.requests_to(f"/o/gated/resolve/{commit}/{WEIGHTS}", "GET")[-1]
        cdn_get = server.hub.requests_to("/cdn/o/gated", "GET")[-1]
        assert hub_get.headers.get("Authorization") == "Bearer hf_secret_token"
        assert "Authorization" not in cdn_get.headers   # the storage host never sees the token


def test_a_file_not_at_that_commit_is_not_found_and_corrupt_bytes_are_a_hash_mismatch(hub, hf_env, run_cli,
                                                                                      tmp_path):
    commit, sha = _repo(hub, "o/there", lora_safetensors(seed=6))
    other_commit, other_sha = _repo(hub, "o/flipped", lora_safetensors(seed=7))
    hub.corrupt("o/flipped", WEIGHTS)
    lock = _lock(tmp_path / "bad.lock", [("gone", sha, "o/there", "gone.safetensors", commit),
                                         ("flipped", other_sha, "o/flipped", WEIGHTS, other_commit)])
    home = tmp_path / "lib"
    got = run_cli("install", lock, "--json", env={"LORAHUB_HOME": str(home)})
    assert got.returncode == 1
    codes = {o["lock_name"]: (o["error"] or {}).get("code") for o in got.json()}
    assert codes == {"gone": "not-found", "flipped": "hash-mismatch"}
    assert run_cli("list", "--json", env={"LORAHUB_HOME": str(home)}).json() == []
    assert _staging(home) == []   # the refused download is removed, not kept


def test_a_storage_host_refusal_is_a_network_error_that_never_shows_the_signed_link(hf_env, run_cli, tmp_path,
                                                                                   monkeypatch):
    with HubServer(lfs_redirect=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        commit, sha = _repo(server.hub, "o/expired", lora_safetensors(seed=8))
        server.hub.fail("o/expired", WEIGHTS, status=403, times=None)   # the CDN refuses (an expired link)
        lock = _lock(tmp_path / "e.lock", [("expired", sha, "o/expired", WEIGHTS, commit)])
        home = tmp_path / "lib"
        got = run_cli("install", lock, "--json", env={"LORAHUB_HOME": str(home)})
        assert got.returncode == 1
        (outcome,) = got.json()
        assert outcome["error"]["code"] == "network" and "refused the download" in outcome["error"]["message"]
        said = outcome["error"]["message"] + outcome["error"]["hint"] + got.stderr
        assert "/cdn/" not in said and "sha256=" not in said   # the (signed) link itself is never shown
        assert "again" in outcome["error"]["hint"]
        assert _staging(home) == []


def test_a_fetched_entry_is_reported_while_a_slow_download_goes_on(tmp_path, monkeypatch):
    """A batch waits at most BATCH_WAIT for later entries: the first entry is stored and reported while the
    second's download still runs (here a local file whose fetch is held back for 3 s)."""
    import threading
    import time

    import lorahub_cli.lock.install as install_module
    from lorahub_cli.lock.model import LockEntry, LockFile, LockSource
    from registry.api import Registry

    files = []
    for seed in (1, 2):
        path = tmp_path / f"a{seed}.safetensors"
        path.write_bytes(lora_safetensors(seed=seed))
        files.append(path)
    lock = LockFile(entries=[LockEntry(name=p.stem, sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                                       sources=[LockSource("path", path=str(p))]) for p in files])
    release = threading.Event()
    real_from = install_module._from

    def held_back(source, entry, registry):
        if entry.name == "a2":
            release.wait(3)
        return real_from(source, entry, registry)

    monkeypatch.setattr(install_module, "_from", held_back)
    reported: list[tuple[str, float]] = []
    start = time.monotonic()
    with Registry(home=tmp_path / "lib") as registry:
        outcomes = install_module.install(lock, registry, on_entry=lambda o: (
            reported.append((o.lock_name, time.monotonic() - start)), release.set() if o.lock_name == "a1" else None))
    assert [o.status for o in outcomes] == ["fetched", "fetched"]
    assert [name for name, _ in reported] == ["a1", "a2"]
    assert reported[0][1] < 2.5   # reported (and so stored) before the held-back download was let go


def test_with_hf_hub_offline_a_cached_file_installs_and_a_missing_one_fails_offline(hub, hf_env, hf_cache, run_cli,
                                                                                    tmp_path):
    from huggingface_hub import hf_hub_download

    cached_commit, cached_sha = _repo(hub, "o/kept", lora_safetensors(seed=10))
    other_commit, other_sha = _repo(hub, "o/absent", lora_safetensors(seed=11))
    hf_hub_download("o/kept", WEIGHTS, revision=cached_commit, cache_dir=hf_cache, endpoint=hf_env["HF_ENDPOINT"])
    lock = _lock(tmp_path / "o.lock", [("kept", cached_sha, "o/kept", WEIGHTS, cached_commit),
                                       ("absent", other_sha, "o/absent", WEIGHTS, other_commit)])
    before = len(hub.requests)
    got = run_cli("install", lock, "--json", env={"LORAHUB_HOME": str(tmp_path / "lib"), "HF_HUB_OFFLINE": "1"})
    assert got.returncode == 1
    by_name = {o["lock_name"]: o for o in got.json()}
    assert by_name["kept"]["status"] == "fetched"
    assert by_name["absent"]["status"] == "failed" and by_name["absent"]["error"]["code"] == "offline"
    assert len(hub.requests) == before   # HF_HUB_OFFLINE: not one request
