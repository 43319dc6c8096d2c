"""The command line's promises that hold for every command: help, version, exit codes, light start-up."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.registry.helpers import write_kohya_sd1

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "numpy", "huggingface_hub")


def imported_modules(*args: str) -> set[str]:
    """Top-level modules a `lora ARGS` process imports (from -X importtime, which lists every import)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lorahub_cli", *args],
                          capture_output=True, text=True, timeout=120)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_lists_commands_and_exit_codes(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    assert "inspect" in result.stdout
    assert "Exit status" in result.stdout


def test_version(run_cli):
    from lorahub_cli import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lora {__version__}"


def test_unknown_command_is_a_usage_error(run_cli):
    result = run_cli("frobnicate")
    assert result.returncode == 2


def test_help_imports_no_heavy_library():
    names = imported_modules("--help")
    assert "typer" in names  # the measurement really saw the imports
    assert not names & set(HEAVY), names & set(HEAVY)


def test_list_imports_no_heavy_library(tmp_home):
    """`lora list` is the command people run most: it reads the database and prints; with --json it does not
    even build a rich console."""
    names = imported_modules("list", "--json")   # the subprocess inherits this test's home
    assert "typer" in names and "registry" in names
    assert not names & {*HEAVY, "rich"}, names & {*HEAVY, "rich"}


def test_argument_errors_are_json_on_stdout_with_json(run_cli):
    """A script that passes --json reads every failure from stdout, parse errors included."""
    for args in (("show", "--json"), ("list", "--bogus", "--json")):
        result = run_cli(*args)
        assert result.returncode == 2, result
        error = result.json()["error"]
        assert error["code"] == "usage" and error["message"] and f"lora {args[0]} --help" in error["hint"]
    plain = run_cli("show")
    assert plain.returncode == 2 and plain.stdout == "" and "Missing argument" in plain.stderr


def test_home_option_reaches_the_library_and_saved_bases_not_the_environment(run_cli, tmp_path):
    """--home is carried in the invocation's settings and passed down; the old root callback wrote it into
    os.environ, where it stayed for the rest of the process."""
    other = tmp_path / "other-home"
    folder = tmp_path / "models"
    write_kohya_sd1(folder / "a.safetensors")
    before = os.environ.get("LORAHUB_HOME")
    assert run_cli("--home", other, "add", folder, "--name", "there").returncode == 0
    assert os.environ.get("LORAHUB_HOME") == before
    assert (other / "registry.db").is_file()
    assert [r["name"] for r in run_cli("--home", other, "list", "--json").json()] == ["there"]
    assert run_cli("list", "--json").json() == []     # the default home (this test's own) is untouched
    # saved bases live in the home too, and `check` finds them there
    assert run_cli("--home", other, "base", "add", "sd15", "--name", "mine").returncode == 0
    assert run_cli("base", "list", "--json").json() == []
    checked = run_cli("--home", other, "check", "there", "--base", "mine", "--json")
    assert checked.returncode == 0 and checked.json()[0]["verdict"] == "compatible", checked
    listed = run_cli("--home", other, "list", "--compatible-with", "mine", "--json")
    assert [r["name"] for r in listed.json()] == ["there"], listed


def test_every_test_gets_its_own_home_offline_and_plain(tmp_path):
    """The autouse fixture in tests/conftest.py: nothing reaches the developer's library, cache or network."""
    assert os.environ["LORAHUB_HOME"] == str(tmp_path / "lorahub-home")
    assert os.environ["HF_HOME"] == str(tmp_path / "hf-home")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["NO_COLOR"] == "1"
    assert os.environ["LORAHUB_NO_PROGRESS"] == "1" and os.environ["COLUMNS"] == "200"
    assert "HF_TOKEN" not in os.environ and "LORAHUB_DATABASE_URL" not in os.environ


def test_run_cli_applies_env_and_cwd_to_one_call_only(run_cli, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    folder = tmp_path / "models"
    write_kohya_sd1(folder / "a.safetensors")
    cwd = os.getcwd()
    added = run_cli("add", "models", "--json", cwd=tmp_path, env={"LORAHUB_HOME": str(elsewhere)})
    assert added.returncode == 0 and added.json()[0]["name"] == "a", added
    assert os.getcwd() == cwd and os.environ["LORAHUB_HOME"] == str(tmp_path / "lorahub-home")
    assert (elsewhere / "registry.db").is_file() and run_cli("list", "--json").json() == []


def test_only_the_named_command_is_built():
    """click builds every registered command's options before running one: `lora list` builds only list."""
    from lorahub_cli.app import app, app_for

    assert [c.name for c in app_for(["--home", "list", "list", "--json"]).registered_commands] == ["list"]
    base = app_for(["-q", "base", "list"])
    assert base.registered_commands == [] and [g.typer_instance.info.name for g in base.registered_groups] == ["base"]
    import inspect

    names = [c.name for c in app.registered_commands]
    for listing in (["--help", "list"], ["-q"], ["frobnicate"], [], ["--", "list"], ["--version"]):
        listed = app_for(listing)   # every name and summary, no command's options
        assert [c.name for c in listed.registered_commands] == names, listing
        assert all(not inspect.signature(c.callback).parameters for c in listed.registered_commands)
        assert [inspect.getdoc(c.callback) for c in listed.registered_commands] == \
            [inspect.getdoc(c.callback) for c in app.registered_commands]
    assert len(app.registered_commands) > 20 and app_for(["list"]) is not app   # the whole app is untouched


def test_shell_completion_gets_the_whole_app(monkeypatch):
    from lorahub_cli.app import app, app_for

    monkeypatch.setenv("_LORA_COMPLETE", "complete_bash")
    assert app_for(["list"]) is app and app_for([]) is app


def test_root_help_reads_as_the_whole_apps(run_cli):
    from typer.testing import CliRunner

    from lorahub_cli.app import app

    whole = CliRunner().invoke(app, ["--help"], prog_name="lora")
    assert whole.exit_code == 0 and run_cli("--help").stdout == whole.stdout
