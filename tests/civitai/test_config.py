"""The Civitai token from ``<home>/config.toml`` (issue 16): it reaches the local Civitai server, the
environment wins over the file, it is never shown or stored, a file others may read is warned about, and a
broken file is ``bad-config``."""

from __future__ import annotations

import json
import os

import pytest

TOKEN = "civitai-config-token-9876543210"


def _write_config(home, text: str, mode: int = 0o600):
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _flat(text: str) -> str:
    """Human output wraps long lines: compare it as one line."""
    return " ".join(text.split())


def _token_file(catalogue):
    catalogue.token = TOKEN
    catalogue.version(101).needs_token = True


def test_the_token_in_the_config_file_reaches_civitai_and_is_never_shown_or_stored(catalogue, run_cli, tmp_home):
    _token_file(catalogue)
    config = _write_config(tmp_home, f'[civitai]\ntoken = "{TOKEN}"\n')
    ok = run_cli("pull", "civitai:11@101", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    downloads = [r for r in catalogue.requests if r["path"] == "/api/download/models/101"]
    assert downloads[-1]["authorization"] == f"Bearer {TOKEN}"
    api_calls = [r for r in catalogue.requests if r["path"].startswith("/api/v1/")]
    assert api_calls and all(r["authorization"] == f"Bearer {TOKEN}" for r in api_calls)
    storage = [r for r in catalogue.requests if r["server"] == "storage"]
    assert storage and all(r["authorization"] is None for r in storage)   # the redirect dropped it
    name = json.loads(ok.stdout)["name"]
    shown = [run_cli("show", name, "--json"), run_cli("show", name), run_cli("list", "--json"),
             run_cli("pull", "civitai:11@101"), run_cli("identify", name, "--json")]
    for text in [ok.stdout, ok.stderr] + [r.stdout + r.stderr for r in shown]:
        assert TOKEN not in text
    assert "config.toml" not in ok.stderr   # a private file: no warning
    for path in tmp_home.rglob("*"):
        if path.is_file() and path != config:
            assert TOKEN.encode() not in path.read_bytes(), path   # not in the database, nor anywhere else


def test_without_the_file_or_the_variable_the_file_is_refused(catalogue, run_cli):
    _token_file(catalogue)
    refused = run_cli("pull", "civitai:11@101", "--json")
    assert refused.returncode == 3 and json.loads(refused.stdout)["error"]["code"] == "gated"


def test_the_environment_wins_over_the_file(catalogue, run_cli, tmp_home, monkeypatch):
    _token_file(catalogue)
    _write_config(tmp_home, '[civitai]\ntoken = "not-the-token"\n')
    monkeypatch.setenv("CIVITAI_API_TOKEN", TOKEN)
    assert run_cli("pull", "civitai:11@101", "--json").returncode == 0
    _write_config(tmp_home, f'[civitai]\ntoken = "{TOKEN}"\n')
    monkeypatch.setenv("CIVITAI_API_TOKEN", "wrong")
    catalogue.version(102).needs_token = True
    wrong = run_cli("pull", "civitai:11@102", "--json")
    assert wrong.returncode == 3 and json.loads(wrong.stdout)["error"]["code"] == "gated"


def test_the_home_option_moves_the_config_file_with_the_library(catalogue, run_cli, tmp_path):
    _token_file(catalogue)
    other = tmp_path / "other-home"
    _write_config(other, f'[civitai]\ntoken = "{TOKEN}"\n')
    ok = run_cli("--home", str(other), "pull", "civitai:11@101", "--json")
    assert ok.returncode == 0, ok.stdout


def test_a_config_file_others_may_read_is_warned_about_without_showing_the_token(catalogue, run_cli, tmp_home):
    _token_file(catalogue)
    config = _write_config(tmp_home, f'[civitai]\ntoken = "{TOKEN}"\n', mode=0o644)
    ok = run_cli("pull", "civitai:11@101")
    assert ok.returncode == 0, ok.stderr
    assert f"chmod 600 {config}" in _flat(ok.stderr) and "0644" in ok.stderr
    as_json = run_cli("pull", "civitai:11@101", "--json")
    assert f"chmod 600 {config}" in json.dumps(json.loads(as_json.stdout)["warnings"])
    identified = run_cli("identify", "--all")
    assert f"chmod 600 {config}" in _flat(identified.stderr)
    for text in (ok.stdout, ok.stderr, as_json.stdout, as_json.stderr, identified.stdout, identified.stderr):
        assert TOKEN not in text


@pytest.mark.parametrize("text", ['[civitai\ntoken = "x"\n', '[civitai]\ntoken = 5\n', 'civitai = "x"\n',
                                  '[civitai]\ntoken = "a\\nb"\n', '[civitai]\ntoken = "sekrit\u20ac"\n',
                                  "a = " + "[" * 50_000 + "\n"])
def test_a_broken_config_file_is_bad_config_and_nothing_is_pulled(catalogue, run_cli, tmp_home, text):
    _write_config(tmp_home, text)
    result = run_cli("pull", "civitai:11@101", "--json")
    assert result.returncode == 1, result.stdout
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "bad-config" and "config.toml" in error["message"]
    assert json.loads(run_cli("list", "--json").stdout) == []


@pytest.mark.parametrize("token", ["sekrit123\nX-Evil: 1", "sekrit\u20ac99", "sek rit"])
def test_an_unusable_token_in_the_environment_is_bad_config_and_never_shown(catalogue, run_cli, monkeypatch, token):
    """A token that cannot go into an HTTP header as it is used to surface, whole, in an `internal` error."""
    monkeypatch.setenv("CIVITAI_API_TOKEN", token)
    result = run_cli("pull", "civitai:11@101", "--json")
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["error"]["code"] == "bad-config"
    assert "sekrit" not in result.stdout + result.stderr and "sek rit" not in result.stdout + result.stderr
