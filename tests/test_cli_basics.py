"""The command line's promises that hold for every command: help, version, exit codes, light start-up."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate")


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


def test_argument_errors_are_json_on_stdout_with_json(run_cli):
    """A script that passes --json reads every failure from stdout, parse errors included."""
    for args in (("show", "--json"), ("list", "--bogus", "--json")):
        result = run_cli(*args)
        assert result.returncode == 2, result
        error = result.json()["error"]
        assert error["code"] == "usage" and error["message"] and f"lora {args[0]} --help" in error["hint"]
    plain = run_cli("show")
    assert plain.returncode == 2 and plain.stdout == "" and "Missing argument" in plain.stderr
