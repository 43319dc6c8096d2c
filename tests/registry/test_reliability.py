"""Reliability, with real processes: `lora add` killed at each dangerous point leaves a consistent library
that `doctor --fix` tidies and a rerun completes; eight concurrent adds on overlapping inputs neither fail
nor duplicate; `lora list` stays light (no torch, numpy or SQLAlchemy on a SQLite library)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.registry.helpers import write_kohya_sd1

LORA = [sys.executable, "-m", "lorahub_cli"]


def lora(*args, env=None, check=True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LORAHUB_NO_PROGRESS": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([*LORA, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"lora {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_consistent(registry, allowed: set[str]) -> list:
    """Every record has intact bytes; the only findings are the harmless leftovers in ``allowed``."""
    for summary in registry.list():
        entry = registry.get(summary.name)
        assert os.path.isfile(entry.path)
        assert registry.store.verify(entry.sha256)[0] if not entry.in_place else True
    findings = registry.doctor()
    assert {f.problem for f in findings} <= allowed, findings
    return findings


@pytest.mark.parametrize("point, leftover", [("copy", "stale-temp"), ("before-commit", "orphan-blob"),
                                             ("after-commit", None)])
def test_add_killed_at_any_point_leaves_a_consistent_library(point, leftover, registry, db_url, src, cli):
    for i in range(3):
        write_kohya_sd1(src / f"f{i}.safetensors", seed=i)
    proc = lora("add", src, env={"LORAHUB_TEST_KILL_AT": point}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc

    findings = assert_consistent(registry, {leftover} if leftover else set())
    assert [f.problem for f in findings] == ([leftover] if leftover else [])
    assert len(registry.list()) == (1 if point == "after-commit" else 0)
    if leftover:
        assert [f.fixed for f in registry.doctor(fix=True)] == [True]
    assert registry.doctor() == []

    code, out, _ = cli("add", src, "--json")  # the rerun (in this process: the kill was the real test)
    rerun = json.loads(out)
    assert code == 0
    expected = ["duplicate", "added", "added"] if point == "after-commit" else ["added"] * 3
    assert [r["status"] for r in rerun] == expected
    assert sorted(s.name for s in registry.list()) == ["f0", "f1", "f2"]
    assert_consistent(registry, set())


@pytest.mark.slow
def test_eight_concurrent_adds_on_overlapping_inputs(registry, db_url, src, tmp_path):
    files = [write_kohya_sd1(src / f"f{i}.safetensors", seed=i) for i in range(10)]
    # same file name, different bytes, in two folders: the processes also race for the name "style"
    files += [write_kohya_sd1(src / d / "style.safetensors", seed=100 + n) for n, d in enumerate("ab")]
    inputs = []
    for p in range(8):
        folder = tmp_path / f"in{p}"
        folder.mkdir()
        for k in range(6):  # each process: 6 of the 12 files (copies), overlapping with its neighbours
            f = files[(p * 2 + k) % len(files)]
            (folder / f.parent.name).mkdir(exist_ok=True)
            shutil.copy(f, folder / f.parent.name / f.name)
        inputs.append(folder)
    registry.db  # created and migrated up front (concurrent first use has its own, cheaper test below)
    env = {**os.environ, "LORAHUB_NO_PROGRESS": "1"}
    procs = [subprocess.Popen([*LORA, "add", folder, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for folder in inputs]
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    statuses = [r["status"] for out, _ in outputs for r in json.loads(out)]
    assert len(statuses) == 48 and set(statuses) <= {"added", "duplicate"}
    assert statuses.count("added") == len(files)  # each content added exactly once, by one process

    rows = registry.list()
    assert len(rows) == len(files) and len({r.sha256 for r in rows}) == len(files)
    assert {r.name for r in rows} == {f"f{i}" for i in range(10)} | {"style", "style-2"}
    assert len(list(registry.store.iter_blobs())) == len(files)
    assert registry.doctor() == []


def test_concurrent_first_use_migrates_once(db_url, tmp_home):
    """Eight openers of a new library at once (threads, each with its own engine and connections, which
    the database treats like processes): every one succeeds and the schema is created exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    from registry.api import Registry
    from registry.schema import HEAD

    def open_one(_):
        reg = Registry(db_url, home=tmp_home)
        try:
            with reg.db.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        finally:
            reg.close()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(open_one, range(8))) == [[HEAD]] * 8


def test_list_and_show_stay_light(registry, db_url, src, backend):
    from lorahub_cli.ingest import ingest

    path = write_kohya_sd1(src / "a.safetensors")
    ingest(path, registry)
    probe = ("import sys\nfrom lorahub_cli.__main__ import main\n"
             "for args in (['list'], ['list', '--json'], ['show', 'a']):\n"
             "    assert main(args) == 0\n"
             "heavy = ('torch', 'diffusers', 'transformers', 'numpy', 'safetensors', 'sqlalchemy', 'alembic')\n"
             "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LORAHUB_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.rsplit("LOADED", 1)[1].strip()
    # never the ML stack; and on the default SQLite library not even SQLAlchemy (stdlib sqlite3 reads)
    assert loaded == ("[]" if backend == "sqlite" else "['sqlalchemy']"), loaded


def test_the_registry_never_imports_the_ui_or_the_ml_stack():
    probe = ("import sys\nimport registry.api, registry.db, registry.writes, registry.doctor, registry.models\n"
             "banned = ('torch', 'diffusers', 'transformers', 'typer', 'rich', 'click')\n"
             "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & set(banned)))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rsplit("LOADED", 1)[1].strip() == "[]"
