"""Output paths (issue 13 D2, C2, C6): what -o may name, checked before any work, through the real CLI.

Real adapter files, a real FIFO, /dev/null when run as root (refused before anything is written, so it is never
at risk), real symlinks, and a real file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) in the lora subprocess."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lorahub_cli.targets import check_file_output, check_folder_output, check_fused_output
from registry.errors import AlreadyExists, UnsafeOutput, UsageError
from tests.conftest import run_in_process
from tests.fixtures.adapters import write_adapter


def lora(home: Path, *args, limit: int | None = None):
    """`lora ARGS` on ``home``: in this process, or in a subprocess under a file-size ``limit``."""
    if limit is None:
        return run_in_process(args, env={"LORAHUB_HOME": str(home), "COLUMNS": "250"})
    env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1", "COLUMNS": "250",
           "HF_HUB_OFFLINE": "1"}

    def file_size_limit() -> None:   # in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "lorahub_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=file_size_limit if limit else None)


def _error(proc: subprocess.CompletedProcess) -> dict:
    text = proc.stdout.strip() or proc.stderr.strip().splitlines()[-1]
    return json.loads(text)["error"]


@pytest.fixture
def adapter(tmp_path) -> Path:
    return write_adapter(tmp_path / "in" / "style.safetensors", "sd15", "kohya", rank=4)   # about 4.4 MB


# --- the rules, called directly ----------------------------------------------------------------------------
def test_file_outputs_replace_only_files_and_links_and_only_with_force(tmp_path, tmp_home):
    (tmp_path / "f.safetensors").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "p.safetensors")
    assert check_file_output(tmp_path / "new.safetensors", force=False) == tmp_path.resolve() / "new.safetensors"
    with pytest.raises(AlreadyExists):
        check_file_output(tmp_path / "f.safetensors", force=False)
    check_file_output(tmp_path / "f.safetensors", force=True)
    with pytest.raises(UsageError):
        check_file_output(tmp_path / "d", force=True)
    with pytest.raises(UnsafeOutput):
        check_file_output(tmp_path / "p.safetensors", force=True)


def test_nothing_is_written_among_the_librarys_own_files(tmp_path, tmp_home):
    for inside in ("blobs/sha256/ab/x.safetensors", "staging/x.safetensors", "registry.db", "x.safetensors"):
        with pytest.raises(UnsafeOutput):
            check_file_output(tmp_home / inside, force=True)
    with pytest.raises(UnsafeOutput):
        check_folder_output(tmp_home)
    check_folder_output(tmp_home / "runs" / "my-run")   # training runs are the user's


def test_a_folder_output_must_be_a_folder(tmp_path, tmp_home):
    (tmp_path / "taken.png").write_bytes(b"x")
    with pytest.raises(UnsafeOutput) as info:
        check_folder_output(tmp_path / "taken.png")
    assert info.value.exit_code == 2
    check_folder_output(tmp_path / "new")
    check_folder_output(tmp_path)


def test_a_fused_folder_never_holds_or_lies_inside_what_it_was_made_from(tmp_path, tmp_home, monkeypatch):
    base = tmp_path / "g2" / "base"
    base.mkdir(parents=True)
    lora_file = tmp_path / "loras" / "a.safetensors"
    lora_file.parent.mkdir()
    lora_file.write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for out in (tmp_path / "g2", base, base / "inside", tmp_path / "loras", tmp_home, tmp_home / "runs" / "x",
                tmp_path / "hf", tmp_path / "hf" / "hub" / "models--x"):
        with pytest.raises(UnsafeOutput):
            check_fused_output(out, force=True, inputs=[lora_file], base=base)
    assert check_fused_output(tmp_path / "fused", force=True, inputs=[lora_file], base=base).name == "fused"


# --- through the CLI ---------------------------------------------------------------------------------------
def test_convert_refuses_a_fifo_even_with_force(adapter, tmp_path):
    fifo = tmp_path / "out" / "x.safetensors"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    proc = lora(tmp_path / "home", "convert", adapter, "-o", fifo, "--force", "--json")
    assert proc.returncode == 2 and _error(proc)["code"] == "unsafe-output", proc.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(fifo.parent) == ["x.safetensors"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can replace /dev/null")
def test_convert_as_root_never_replaces_dev_null(adapter, tmp_path):
    before = os.lstat("/dev/null")
    proc = lora(tmp_path / "home", "convert", adapter, "-o", "/dev/null", "--force", "--json")
    assert proc.returncode == 2 and _error(proc)["code"] == "unsafe-output", proc.stderr
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_convert_force_replaces_a_symlink_itself_never_its_target(adapter, tmp_path):
    precious = tmp_path / "precious.safetensors"
    precious.write_bytes(b"the user's own bytes")
    link = tmp_path / "out.safetensors"
    link.symlink_to(precious)
    refused = lora(tmp_path / "home", "convert", adapter, "-o", link, "--json")
    assert refused.returncode == 1 and _error(refused)["code"] == "already-exists"
    proc = lora(tmp_path / "home", "convert", adapter, "-o", link, "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert not link.is_symlink() and link.stat().st_size > 1000
    assert precious.read_bytes() == b"the user's own bytes"


def test_merge_refuses_the_librarys_own_folders(adapter, tmp_path):
    home = tmp_path / "home"
    target = home / "staging" / "merged.safetensors"
    proc = lora(home, "merge", adapter, adapter, "-o", target, "--force", "--json")
    assert proc.returncode == 2 and _error(proc)["code"] == "unsafe-output", proc.stderr
    assert not target.exists()


def test_generate_into_an_existing_file_is_a_usage_error(tmp_path):
    taken = tmp_path / "shot.png"
    taken.write_bytes(b"not a folder")
    proc = lora(tmp_path / "home", "generate", "a cat", "--base", "sd15", "-o", taken, "--json")
    assert proc.returncode == 2 and _error(proc)["code"] == "unsafe-output", proc.stderr
    assert taken.read_bytes() == b"not a folder"


# --- a full disk (C2) --------------------------------------------------------------------------------------
LIMIT = 1 << 20   # the 4.4 MB adapter (or its conversion) does not fit; the database and small files do


def test_convert_past_the_file_size_limit_is_disk_full_and_leaves_nothing(adapter, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = lora(tmp_path / "home", "convert", adapter, "-o", out / "x.safetensors", "--json", limit=LIMIT)
    assert proc.returncode == 3 and _error(proc)["code"] == "disk-full", proc.stderr
    assert os.listdir(out) == []


def test_merge_past_the_file_size_limit_is_disk_full_and_leaves_nothing(adapter, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = lora(tmp_path / "home", "merge", adapter, adapter, "-o", out / "m.safetensors", "--json", limit=LIMIT)
    assert proc.returncode == 3 and _error(proc)["code"] == "disk-full", proc.stderr
    assert os.listdir(out) == []


def test_add_past_the_file_size_limit_is_disk_full_and_stores_nothing(adapter, tmp_path):
    home = tmp_path / "home"
    assert lora(home, "list", "--json").returncode == 0   # the library exists (its database is small)
    proc = lora(home, "add", adapter, "--json", limit=LIMIT)
    [item] = json.loads(proc.stdout)   # add reports each file of its batch
    assert proc.returncode != 0 and item["error"]["code"] == "disk-full", proc.stdout + proc.stderr
    blobs = home / "blobs"
    assert not [p for p in blobs.rglob("*") if p.is_file() and p.name != ".lock"] if blobs.exists() else True
    listed = lora(home, "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_run_folder_is_a_folder_outside_the_librarys_own_files(tmp_path, tmp_home):
    from lorahub_cli.train.config import TrainConfig
    from lorahub_cli.train.rundir import prepare_run

    taken = tmp_path / "taken"
    taken.write_text("a file of the user's")
    for run_dir in (taken, tmp_home / "blobs" / "run"):
        with pytest.raises(UnsafeOutput):
            prepare_run(TrainConfig(base=str(tmp_path), data=str(tmp_path), name="run", run_dir=str(run_dir)))
    assert taken.read_text() == "a file of the user's" and not (tmp_home / "blobs").exists()


def test_a_path_under_a_file_is_refused_before_anything_is_made(tmp_path, tmp_home):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnsafeOutput):
        check_file_output(tmp_path / "f" / "sub" / "x.safetensors", force=True)
    with pytest.raises(UnsafeOutput):
        check_folder_output(tmp_path / "f" / "shots")
    assert (tmp_path / "f").read_text() == "x"
