"""SOURCE guessing: Hub ids, hf:// URIs, Hub web URLs, other URLs, local paths, and the errors."""

from __future__ import annotations

import pytest

from lorahub_cli.errors import NotFound, UsageError
from lorahub_cli.sources import HUB, PATH, URL, Source, parse_source


@pytest.mark.parametrize("text, repo_id, revision, path", [
    ("sayakpaul/sd-model-finetuned-lora-t4", "sayakpaul/sd-model-finetuned-lora-t4", None, None),
    ("owner/repo@v1.0", "owner/repo", "v1.0", None),
    ("owner/repo@" + "a" * 40, "owner/repo", "a" * 40, None),
    ("owner/repo/sub/lora.safetensors", "owner/repo", None, "sub/lora.safetensors"),
    ("owner/repo/lora.safetensors@dev", "owner/repo", "dev", "lora.safetensors"),
    ("hf://owner/repo", "owner/repo", None, None),
    ("hf://models/owner/repo@main/x.safetensors", "owner/repo", "main", "x.safetensors"),
    ("hf://owner/repo@refs/pr/3/x.safetensors", "owner/repo", "refs/pr/3", "x.safetensors"),
    ("hf://owner/repo/dir/x.bin@v2", "owner/repo", "v2", "dir/x.bin"),
    ("https://huggingface.co/owner/repo", "owner/repo", None, None),
    ("https://huggingface.co/owner/repo/tree/dev", "owner/repo", "dev", None),
    ("https://huggingface.co/owner/repo/resolve/main/pytorch_lora_weights.safetensors?download=true",
     "owner/repo", "main", "pytorch_lora_weights.safetensors"),
    ("https://hf.co/owner/repo/blob/refs%2Fpr%2F1/a/b.safetensors", "owner/repo", "refs/pr/1", "a/b.safetensors"),
])
def test_hub_forms(text, repo_id, revision, path):
    source = parse_source(text)
    assert (source.kind, source.repo_id, source.revision, source.path_in_repo) == (HUB, repo_id, revision, path)


def test_urls_on_the_configured_endpoint_are_hub_sources(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8123")
    source = parse_source("http://127.0.0.1:8123/o/r/resolve/v1/w.safetensors")
    assert source == Source(HUB, repo_id="o/r", revision="v1", path_in_repo="w.safetensors")
    assert parse_source("http://127.0.0.1:9999/o/r/resolve/v1/w.safetensors").kind == URL


def test_other_urls_are_plain_downloads():
    source = parse_source("https://example.com/files/lora.safetensors?token=1")
    assert source.kind == URL and source.url == "https://example.com/files/lora.safetensors?token=1"


def test_an_existing_local_path_wins_over_a_repo_id(tmp_path, monkeypatch):
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "repo").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    source = parse_source("owner/repo")
    assert source.kind == PATH and source.local_path == tmp_path / "owner" / "repo"


def test_options_merge_with_the_source():
    source = parse_source("owner/repo", revision="v1", file="a/b.safetensors")
    assert (source.revision, source.path_in_repo) == ("v1", "a/b.safetensors")
    assert str(source) == "hf://owner/repo@v1/a/b.safetensors"


@pytest.mark.parametrize("text, kwargs, error, words", [
    ("", {}, UsageError, "empty"),
    ("owner/repo@v1", {"revision": "v2"}, UsageError, "two revisions"),
    ("owner/repo/a.safetensors", {"file": "b.safetensors"}, UsageError, "two files"),
    ("https://example.com/x.safetensors", {"revision": "v1"}, UsageError, "--revision"),
    ("ftp://example.com/x.safetensors", {}, UsageError, "unsupported URL"),
    ("hf://datasets/owner/repo", {}, UsageError, "not a model repository"),
    ("https://huggingface.co/spaces/owner/app", {}, UsageError, "not a model repository"),
    ("https://huggingface.co/owner/repo/discussions/3", {}, UsageError, "not a model file URL"),
    ("own--er/repo", {}, UsageError, "not a valid Hub repository id"),
    ("owner/re po", {}, UsageError, "not a valid Hub repository id"),
    ("./missing.safetensors", {}, NotFound, "no such file"),
    ("missing.safetensors", {}, NotFound, "no such file"),
])
def test_bad_sources_are_refused_with_a_reason(text, kwargs, error, words):
    with pytest.raises(error) as caught:
        parse_source(text, **kwargs)
    assert words in caught.value.message
