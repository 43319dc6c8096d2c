"""`lora push` against the local Hub (real huggingface_hub client, real HTTP): the round trip push -> pull
elsewhere keeps sha256, base model and trigger words; the same bytes again are a no-op; auth failures upload
nothing and never show the token."""

from __future__ import annotations

import hashlib

import pytest

from tests.embeddings.files import a1111_safetensors
from tests.registry.helpers import write_kohya_sd1

TOKEN = "hf_secret_write_token_abc123"


@pytest.fixture
def alice(hub, hf_env, monkeypatch):
    hub.add_user(TOKEN, "alice", orgs=("team",))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


def _add_lora(tmp_path, run_cli, name="pixel"):
    path = write_kohya_sd1(tmp_path / f"{name}.safetensors", seed=1, metadata={
        "ss_sd_model_name": "runwayml/stable-diffusion-v1-5", "modelspec.trigger_phrase": "pxart"})
    out = run_cli("add", path, "--name", name, "--json")
    assert out.returncode == 0, out
    return path


def test_round_trip_push_then_pull_elsewhere(tmp_path, alice, run_cli, monkeypatch):
    weights = _add_lora(tmp_path, run_cli)
    run_cli("tag", "pixel", "+retro")
    pushed = run_cli("push", "pixel", "--repo", "alice/pixel", "--json")
    assert pushed.returncode == 0, pushed
    out = pushed.json()
    assert out["status"] == "pushed" and out["files"] == ["README.md", "pixel.safetensors"]
    assert TOKEN not in pushed.stdout + pushed.stderr
    repo = alice.repos["alice/pixel"]
    card = repo.files_at(repo.refs["main"])["README.md"].data.decode()
    assert "base_model: runwayml/stable-diffusion-v1-5" in card and "instance_prompt: pxart" in card
    assert "- lora" in card and "- diffusers" in card and "- text-to-image" in card and "license:" in card
    assert "load_lora_weights" in card and "<lora:pixel:1>" in card

    # pull into another library: the same bytes, base model and trigger words
    monkeypatch.setenv("LORAHUB_HOME", str(tmp_path / "elsewhere"))
    pulled = run_cli("pull", "alice/pixel", "--json")
    assert pulled.returncode == 0, pulled
    shown = run_cli("show", pulled.json()["name"], "--json").json()
    assert shown["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert shown["base_model"] == "runwayml/stable-diffusion-v1-5" and shown["trigger_words"] == ["pxart"]
    assert "retro" in shown["tags"]


def test_the_same_bytes_again_are_a_no_op(tmp_path, alice, run_cli):
    _add_lora(tmp_path, run_cli)
    first = run_cli("push", "pixel", "--repo", "alice/pixel", "--json")
    commits = len(alice.commits_made)
    again = run_cli("push", "pixel", "--repo", "alice/pixel", "--json")
    assert again.returncode == 0, again
    assert again.json()["status"] == "unchanged" and again.json()["commit"] == first.json()["commit"]
    assert len(alice.commits_made) == commits


def _with_preview(tmp_home, path) -> bytes:
    """``path`` into the library with one preview image (as Civitai's or `lora preview`'s would be stored)."""
    import io

    from PIL import Image

    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.records import PreviewRecord

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    png = buf.getvalue()
    record = PreviewRecord(hashlib.sha256(png).hexdigest(), ".png", source="user")
    (tmp_home / record.relpath()).parent.mkdir(parents=True, exist_ok=True)
    (tmp_home / record.relpath()).write_bytes(png)
    with Registry(home=tmp_home) as reg:
        ingest(path, reg, previews=[record])
    return png


def test_an_embedding_with_a_preview_on_a_branch_of_a_private_repo(tmp_path, tmp_home, alice, run_cli,
                                                                   monkeypatch):
    png = _with_preview(tmp_home, a1111_safetensors(tmp_path / "EasyNeg.safetensors"))
    out = run_cli("push", "EasyNeg", "--repo", "team/neg", "--private", "--revision", "v2", "--json")
    assert out.returncode == 0, out
    repo = alice.repos["team/neg"]
    assert repo.private and "v2" in repo.refs
    files = repo.files_at(repo.refs["v2"])
    assert "EasyNeg.safetensors" in files
    images = [p for p in files if p.startswith("images/")]
    assert len(images) == 1 and files[images[0]].data == png
    card = files["README.md"].data.decode()
    assert f"url: {images[0]}" in card   # the widget shows the preview
    assert "textual-inversion" in card and "load_textual_inversion" in card and "embeddings/" in card
    monkeypatch.setenv("LORAHUB_HOME", str(tmp_path / "elsewhere"))
    pulled = run_cli("pull", "team/neg@v2", "--json")
    assert pulled.returncode == 0, pulled
    shown = run_cli("show", pulled.json()["name"], "--json").json()
    assert (shown["kind"], shown["tokens"]) == ("embedding", ["EasyNeg"])


def test_auth_errors_upload_nothing(tmp_path, hub, hf_env, run_cli, monkeypatch):
    _add_lora(tmp_path, run_cli)
    hub.add_user(TOKEN, "alice")
    hub.create_repo("bob/theirs")
    before = len(hub.requests_to("lfs-upload")), len(hub.repos["bob/theirs"].history)

    no_token = run_cli("push", "pixel", "--repo", "alice/pixel", "--json")
    assert no_token.returncode == 1 and no_token.json()["error"]["code"] == "auth", no_token
    assert "alice/pixel" not in hub.repos

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    theirs = run_cli("push", "pixel", "--repo", "bob/theirs", "--json")
    assert theirs.returncode == 1 and theirs.json()["error"]["code"] == "auth", theirs
    bad = run_cli("push", "pixel", "--repo", "alice/x", "--json", env={"HF_TOKEN": "hf_wrong"})
    assert bad.returncode == 1 and bad.json()["error"]["code"] == "auth", bad
    assert (len(hub.requests_to("lfs-upload")), len(hub.repos["bob/theirs"].history)) == before
    for result in (no_token, theirs, bad):
        assert TOKEN not in result.stdout + result.stderr and "hf_wrong" not in result.stdout + result.stderr

    usage = run_cli("push", "pixel", "--repo", "not a repo", "--json")
    assert usage.returncode == 2 and usage.json()["error"]["code"] == "usage"


def test_a_trained_entry_pushes_its_training_settings(tmp_path, tmp_home, alice, run_cli):
    import json

    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.records import SourceRecord

    run_dir = tmp_path / "runs" / "pixel"
    run_dir.mkdir(parents=True)
    (run_dir / "README.md").write_text("---\nbase_model: runwayml/stable-diffusion-v1-5\nlorahub:\n  training:\n"
                                       "    rank: 4\n    lr: 0.0001\n    steps: 500\n---\n# pixel\n")
    path = write_kohya_sd1(run_dir / "pixel.safetensors", seed=3)
    with Registry(home=tmp_home) as reg:
        ingest(path, reg, name="pixel", source=SourceRecord(kind="trained", path=str(run_dir)))
    out = run_cli("push", "pixel", "--repo", "alice/trained", "--json")
    assert out.returncode == 0, out
    files = alice.repos["alice/trained"].files_at(alice.repos["alice/trained"].refs["main"])
    assert json.loads(files["training_settings.json"].data) == {"rank": 4, "lr": 0.0001, "steps": 500}
    assert "lr: 0.0001" in files["README.md"].data.decode()


def test_a_large_file_goes_up_in_multipart_parts(tmp_path, alice, run_cli, monkeypatch):
    """The Hub answers a large object's LFS batch with `chunk_size` and one URL per part (huggingface_hub
    then PUTs each part and posts the completion); the server here does the same above a lowered threshold."""
    weights = _add_lora(tmp_path, run_cli)
    data = weights.read_bytes()
    chunk = 16 * 1024
    assert len(data) > 2 * chunk   # three parts at least, the last one short
    alice.multipart_chunk_size = chunk
    pushed = run_cli("push", "pixel", "--repo", "alice/pixel", "--json")
    assert pushed.returncode == 0, pushed
    oid = hashlib.sha256(data).hexdigest()
    assert alice.multipart_completed == [(oid, -(-len(data) // chunk))]
    repo = alice.repos["alice/pixel"]
    assert repo.files_at(repo.refs["main"])["pixel.safetensors"].data == data
    monkeypatch.setenv("LORAHUB_HOME", str(tmp_path / "elsewhere"))
    pulled = run_cli("pull", "alice/pixel", "--json")
    assert pulled.returncode == 0, pulled
    assert run_cli("show", pulled.json()["name"], "--json").json()["sha256"] == oid


def _http(method: str, url: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request with the standard library (status, headers, body); an HTTP error is an answer too."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def test_a_multipart_completion_with_a_bad_or_missing_part_stores_nothing(alice, hub_server):
    """The completion joins the parts only when every part is there with its ETag and the sha256 holds."""
    import json

    data = bytes(range(256)) * 1024   # 256 KiB: four parts of 64 KiB
    oid, size = hashlib.sha256(data).hexdigest(), 64 * 1024
    alice.multipart_chunk_size = size
    alice.create_repo("alice/parts")
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, _, body = _http("POST", f"{hub_server.url}/alice/parts.git/info/lfs/objects/batch", json.dumps(
        {"operation": "upload", "transfers": ["basic", "multipart"],
         "objects": [{"oid": oid, "size": len(data)}]}).encode(), auth)
    assert status == 200
    action = json.loads(body)["objects"][0]["actions"]["upload"]
    assert action["header"]["chunk_size"] == str(size)
    assert sorted(action["header"]) == ["1", "2", "3", "4", "chunk_size"]

    def put(n: int, content: bytes) -> dict:
        status, headers, _ = _http("PUT", action["header"][str(n)], content)
        assert status == 200
        return {"partNumber": n, "etag": headers["etag"]}

    def complete(parts: list) -> int:
        return _http("POST", action["href"], json.dumps({"oid": oid, "parts": parts}).encode(),
                     {"Content-Type": "application/json"})[0]

    parts = [put(n, data[(n - 1) * size:n * size]) for n in range(1, 4)]   # part 4 not sent yet
    assert complete(parts) == 400 and oid not in alice.lfs_objects
    wrong = put(4, b"not the right bytes")
    assert complete([*parts, {"partNumber": 4, "etag": '"0"'}]) == 400       # an ETag that is not the part's
    assert complete([*parts, wrong]) == 400 and oid not in alice.lfs_objects  # ETags hold, the sha256 does not
    assert complete([*parts, put(4, data[3 * size:])]) == 200
    assert alice.lfs_objects[oid] == data and alice.multipart_completed == [(oid, 4)]
