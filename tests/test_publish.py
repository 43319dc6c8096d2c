"""registry.publish: the one way a file or folder is put where someone reads it (issue 14 item 5, issue 13 C2).

Real files, real folders, a real FIFO and a real file-size limit in a subprocess; no mocks of the OS."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from registry.errors import AlreadyExists, DiskFull, UnsafeOutput
from registry.publish import publish_file, publish_folder, temp_file, temp_folder

REPO = Path(__file__).resolve().parent.parent


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_file_is_published_whole_with_the_umask_mode_and_no_temp_left(tmp_path):
    old = os.umask(0o027)
    try:
        out = publish_file(tmp_path / "a.json", '{"x": 1}')
    finally:
        os.umask(old)
    assert out.read_text() == '{"x": 1}'
    assert stat.S_IMODE(out.stat().st_mode) == 0o640   # tempfile alone would leave 0o600
    assert _names(tmp_path) == ["a.json"]


def test_a_failed_write_or_check_leaves_the_old_file_and_nothing_else(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half_then_fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError):
        publish_file(target, half_then_fail)

    def refuse(path: Path) -> None:
        assert path.read_bytes() == b"new" and path.parent == tmp_path   # a temp beside the target
        raise ValueError("check refused it")

    with pytest.raises(ValueError):
        publish_file(target, b"new", check=refuse)
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["a.bin"]


def test_replace_false_never_replaces_and_the_temp_can_take_another_name(tmp_path):
    (tmp_path / "1.png").write_bytes(b"first")
    with temp_file(tmp_path, suffix=".png.tmp") as tmp:
        tmp.path.write_bytes(b"second")
        with pytest.raises(FileExistsError):
            tmp.publish(tmp_path / "1.png", replace=False)
        tmp.publish(tmp_path / "2.png", replace=False)
    assert (tmp_path / "1.png").read_bytes() == b"first" and (tmp_path / "2.png").read_bytes() == b"second"
    assert _names(tmp_path) == ["1.png", "2.png"]


def test_a_fifo_or_a_folder_is_never_replaced(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    for target in (fifo, folder):
        with pytest.raises(UnsafeOutput):
            publish_file(target, b"data")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and folder.is_dir() and not any(folder.iterdir())
    assert _names(tmp_path) == ["dir.safetensors", "pipe.safetensors"]


def test_a_symlink_is_replaced_itself_never_its_target(tmp_path):
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"keep me")
    link = tmp_path / "out.bin"
    link.symlink_to(precious)
    publish_file(link, b"new bytes")
    assert not link.is_symlink() and link.read_bytes() == b"new bytes"
    assert precious.read_bytes() == b"keep me"


def test_a_long_target_name_still_gets_a_temp_name(tmp_path):
    name = "\u732b" * 80 + ".json"   # 245 bytes in UTF-8: the name fits, the name plus affixes would not
    assert publish_file(tmp_path / name, "{}").read_text() == "{}"


def test_a_folder_replaces_the_old_one_only_once_it_is_in_place(tmp_path):
    out = tmp_path / "fused"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with temp_folder(tmp_path, name="fused") as tmp:
        (tmp / "new.txt").write_text("new")
        with pytest.raises(AlreadyExists):
            publish_folder(tmp, out)
        assert (out / "old.txt").exists()
        publish_folder(tmp, out, replace=True)
    assert _names(out) == ["new.txt"] and _names(tmp_path) == ["fused"]


def test_a_folder_refused_by_the_caller_is_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("keep")

    def not_ours(folder: Path) -> None:
        raise UnsafeOutput(f"{folder} is not ours")

    with temp_folder(tmp_path, name="mine") as tmp:
        (tmp / "new.txt").write_text("new")
        with pytest.raises(UnsafeOutput):
            publish_folder(tmp, out, replace=True, replaceable=not_ours)
    assert _names(out) == ["keep.txt"] and _names(tmp_path) == ["mine"]


_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, sys.argv[1])
    from registry.errors import DiskFull
    from registry.publish import publish_file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # so write() fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    try:
        publish_file(sys.argv[2], b"x" * (1 << 20))
    except DiskFull as err:
        print(err.code, err.exit_code)
""")


def test_a_file_size_limit_is_disk_full_and_leaves_nothing(tmp_path):
    target = tmp_path / "big.bin"
    proc = subprocess.run([sys.executable, "-c", _LIMITED, str(REPO), str(target)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["disk-full", "3"]
    assert _names(tmp_path) == []


def test_one_implementation_of_publishing():
    """No other module renames a temp file over a published name, makes its own temp file or fsyncs.
    (``os.rename`` of an existing file to a new name, such as doctor's quarantine or a database backup, moves
    it aside; it publishes nothing and is not counted.)"""
    pattern = re.compile(r"os\.replace\(|mkstemp|NamedTemporaryFile|TemporaryDirectory|os\.fsync\(")
    allowed = {"registry/publish.py"}
    found = []
    for package in ("lorahub_cli", "registry"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in allowed:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert found == []
