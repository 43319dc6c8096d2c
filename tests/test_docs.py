"""docs/cli.md is the command reference; it must say what `lora --help` says today."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_cli_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_readme_starts_with_setup_and_test_commands():
    """CI runs exactly these two commands' install and test steps; keep them at the top."""
    text = (REPO / "README.md").read_text()
    blocks = [b.split("\n", 1)[1].split("```", 1)[0].strip() for b in text.split("```bash")[1:3]]
    # the serve extra too: the web page's tests run in every CI run
    assert blocks[0].startswith("python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e \".[test,serve]\"")
    assert blocks[1] == ".venv/bin/python -m pytest -q"
    # .ci/run reads both commands out of README.md and runs them as written: what it reads is what is there
    ci = (REPO / ".ci" / "run").read_text()
    reader = next(line for line in ci.splitlines() if line.startswith("readme_block()"))
    for n, block in enumerate(blocks, start=1):
        read = subprocess.run(["bash", "-c", f"{reader}\nreadme_block {n}"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        assert read == block
    assert 'bash -euo pipefail -c "$setup"' in ci and 'bash -euo pipefail -c "$tests"' in ci
