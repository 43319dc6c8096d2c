"""The hard cases of issue 17: another filesystem, a read-only target, a kill -9 mid-sync. Nothing in the
target is ever lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorahub_cli.export.manifest import MANIFEST
from tests.export.conftest import tree
from tests.registry.helpers import write_kohya_sd1


def _other_filesystem(tmp_path: Path) -> Path:
    """A folder on another filesystem than the library: /dev/shm (tmpfs) where it is one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no writable folder on another filesystem (/dev/shm)")
    return Path(os.path.realpath(shm))


def test_another_filesystem_falls_back_to_symlinks_and_says_so(library, tmp_path, run_cli):
    import tempfile

    with tempfile.TemporaryDirectory(dir=_other_filesystem(tmp_path)) as far:
        out = Path(far) / "ui"
        r = run_cli("export", "style", "ink", "--to", out)
        assert r.returncode == 0, r
        assert "hardlink impossible" in r.stderr and "another filesystem" in r.stderr and "using symlink" in r.stderr
        assert (out / "sd1/style.safetensors").is_symlink()
        assert (out / "sd1/style.safetensors").read_bytes()[:8] == (library / "style.safetensors").read_bytes()[:8]
        r = run_cli("export", "old", "--to", out, "--link", "hardlink", "--json")   # asked for: no fallback
        assert r.returncode == 1 and r.json()["error"]["code"] == "link-impossible"
        r = run_cli("export", "old", "--to", out, "--link", "copy", "--json")
        assert r.returncode == 0 and r.json()["methods"] == {"copy": 1, "write": 1}
        assert not (out / "sd1/old.safetensors").is_symlink()


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only folder holding one file of the user's: a read-only tmpfs mount as root (root ignores
    permission bits), a chmod 0555 folder otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        (folder / "theirs.safetensors").write_bytes(b"user file")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (folder / "theirs.safetensors").write_bytes(b"user file")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_read_only_target_is_refused_and_untouched(library, read_only_folder, run_cli):
    r = run_cli("sync", "--to", read_only_folder, "--json")
    assert r.returncode == 1
    assert r.json()["error"]["code"] == "target-not-writable"
    assert sorted(os.listdir(read_only_folder)) == ["theirs.safetensors"]
    assert (read_only_folder / "theirs.safetensors").read_bytes() == b"user file"


_KILLED_SYNC = """
import sys
from lorahub_cli.__main__ import main
sys.exit(main(["sync", "--to", sys.argv[1]]))
"""


@pytest.mark.parametrize("point", ["sync-placed-3", "sync-sidecar-temps"])
def test_kill_9_mid_sync_then_the_next_sync_completes(tmp_path, run_cli, point):
    src = tmp_path / "in"
    for i in range(6):
        write_kohya_sd1(src / f"a{i}.safetensors", seed=i + 10)
    assert run_cli("add", src).returncode == 0
    out = tmp_path / "ui"
    (out / "sd1").mkdir(parents=True)
    (out / "sd1" / "a0.safetensors").write_bytes(b"the user's own")         # in the way: a collision
    (out / "notes.txt").write_text("the user's notes")
    env = {**os.environ, "LORAHUB_TEST_KILL_AT": point}
    proc = subprocess.run([sys.executable, "-c", _KILLED_SYNC, str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert json.loads((out / MANIFEST).read_text())["complete"] is False
    r = run_cli("sync", "--to", out, "--json")
    assert r.returncode == 1                                                 # the collision is still reported
    report = r.json()[0]
    assert [c["path"] for c in report["collisions"]] == ["sd1/a0.safetensors"]
    assert not report["errors"]
    files = tree(out)
    assert sorted(files) == ["notes.txt", "sd1/a0.safetensors", *sorted(
        f"sd1/a{i}.{s}" for i in range(1, 6) for s in ("json", "safetensors"))]
    assert (out / "sd1" / "a0.safetensors").read_bytes() == b"the user's own"
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert json.loads((out / MANIFEST).read_text())["complete"] is True
    again = run_cli("sync", "--to", out, "--json").json()[0]
    assert (again["added"], again["removed"], again["unchanged"]) == ([], [], 10)


def test_two_syncs_at_once_into_one_target(library, tmp_path):
    out = tmp_path / "ui"
    procs = [subprocess.Popen([sys.executable, "-c", _KILLED_SYNC, str(out)], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0], results
    assert sorted(tree(out)) == sorted(f"sd1/{n}.{s}" for n in ("style", "ink", "old") for s in ("json", "safetensors"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] is True and len(manifest["files"]) == 6
    assert not [p for p in out.rglob(".*.tmp")]


def test_symlinks_from_a_relative_home_point_at_the_blob(library, tmp_path, tmp_home, run_cli):
    import tempfile

    with tempfile.TemporaryDirectory(dir=_other_filesystem(tmp_path)) as far:
        out = Path(far) / "ui"
        relative = os.path.relpath(tmp_home, tmp_path)
        r = run_cli("--home", relative, "export", "style", "--to", out, "--link", "symlink", cwd=tmp_path)
        assert r.returncode == 0, r
        link = out / "sd1" / "style.safetensors"
        assert os.path.isabs(os.readlink(link)) and link.read_bytes()[:8] == (library / "style.safetensors").read_bytes()[:8]
