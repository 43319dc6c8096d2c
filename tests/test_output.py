"""Human output never lets user text take over the terminal; one Output per invocation, no state between calls."""

from __future__ import annotations

import io
import json

import pytest

from lorahub_cli.output import Output, Result, clean
from tests.registry.helpers import write_kohya_sd1

RLO = "\u202e"   # RIGHT-TO-LEFT OVERRIDE: "evil\u202egpj.exe" reads as "evilexe.jpg"
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", RLO, "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f",
        "\u061c", "\u2028", "\u2029"]
CONTROLS = ["\x1b", "\r", "\x07", "\x00", "\x7f", "\x9b", "\x85"]   # \x9b is a one-byte CSI in C1


@pytest.mark.parametrize("char", BIDI + CONTROLS)
def test_clean_escapes_control_and_bidi_characters(char):
    shown = clean(f"a{char}b")
    assert char not in shown
    assert shown == f"a\\{'u' if ord(char) > 0xFF else 'x'}{ord(char):0{4 if ord(char) > 0xFF else 2}x}b"


def test_clean_keeps_ordinary_text_including_non_latin_and_emoji():
    text = "漢字 ñ 👩‍👩‍👧 עברית العربية"   # right-to-left scripts themselves are fine; only the controls are not
    assert clean(text) == text


def test_show_escapes_bidi_characters_from_the_file_name_and_metadata(run_cli, tmp_path):
    """Issue 13 M6: a right-to-left override was printed raw by `lora show` (names, tags and trigger words
    refuse such characters; file names and metadata cannot)."""
    folder = tmp_path / "models"
    write_kohya_sd1(folder / f"evil{RLO}gpj.exe.safetensors",
                    metadata={"ss_output_name": f"x{RLO}y", "ss_comment": "a\u2066b\u2069c\x1b[31m"})
    assert run_cli("add", folder, "--in-place", "--name", "evil").returncode == 0
    result = run_cli("show", "evil")
    assert result.returncode == 0, result
    shown = result.stdout + result.stderr
    assert not any(c in shown for c in BIDI + CONTROLS), ascii(shown)
    assert "evil\\u202egpj.exe.safetensors" in shown and "x\\u202ey" in shown and "a\\u2066b" in shown
    # JSON is data, not a view: the characters stay as they are there
    data = run_cli("show", "evil", "--json").json()
    assert data["path"].endswith(f"evil{RLO}gpj.exe.safetensors") and data["metadata"]["ss_output_name"] == f"x{RLO}y"


def test_the_fast_list_table_escapes_bidi_characters():
    from datetime import datetime
    from types import SimpleNamespace

    from lorahub_cli.render.library import render_list

    row = SimpleNamespace(name="plain", family="sd1", format="kohya", rank=4, size=10, base_model=f"a{RLO}b",
                          tags=["x"], added_at=datetime(2026, 1, 1))
    stdout = io.StringIO()
    render_list(Output(stdout=stdout), [row])
    assert RLO not in stdout.getvalue() and "a\\u202eb" in stdout.getvalue()


def test_output_renders_json_or_the_human_view_and_the_exit_status():
    shown = []
    result = Result({"name": "x"}, lambda out: shown.append(out), exit_code=1)
    stdout = io.StringIO()
    assert Output(json=True, stdout=stdout).render(result) == 1
    assert json.loads(stdout.getvalue()) == {"name": "x"} and shown == []
    human = Output(stdout=io.StringIO())
    assert human.render(result) == 1 and shown == [human]


def test_flags_do_not_leak_from_one_invocation_to_the_next(run_cli):
    """The old process-wide `ui` kept --json and -q from an earlier call: an in-process caller saw JSON errors
    (and no hints) after one --json call."""
    assert run_cli("show", "nothing-here", "--json").json()["error"]["code"] == "not-found"
    quiet = run_cli("-q", "list")
    assert quiet.returncode == 0 and quiet.stderr == ""
    plain = run_cli("show", "nothing-here")
    assert plain.returncode == 1 and plain.stdout == "" and "error[not-found]" in plain.stderr
    assert "hint:" in plain.stderr
    listed = run_cli("list")
    assert "the library is empty" in listed.stderr


def test_argument_errors_escape_the_user_text_they_quote(run_cli):
    result = run_cli("show", f"--bogus{RLO}x")
    assert result.returncode == 2 and RLO not in result.stderr, ascii(result.stderr)
    assert "--bogus\\u202ex" in result.stderr and "Try 'lora show" in result.stderr


def test_a_long_plain_line_reaches_a_pipe_whole():
    """`lora install | grep hf://` found half lines: a line longer than the console's 80 columns was broken."""
    stdout = io.StringIO()
    text = "fetched  lora-000 from hf://bench/lora-000@49c405916ed7/" + "x" * 120 + ".safetensors"
    Output(stdout=stdout).line(text)
    assert stdout.getvalue() == text + "\n"
