"""Two pulls of one URL at once (issue 13 C8): they shared one partial file, and in 20 of 20 trials one of
them failed with an internal FileNotFoundError. Now the partial is held under a per-URL lock and each
download ends in a complete file of its own; an interrupted partial is still resumed.

Real downloads from the local test server, started together from a barrier; no timing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from lorahub_cli.sources.url import fetch_url, staging_paths
from tests.hubserver import lora_safetensors

NAME = "styles/shared.safetensors"
TRIALS = 20


def fetch_together(url: str, staging: Path, n: int = 2) -> list:
    """``n`` threads fetch ``url`` into one staging folder at the same moment; each returns its file or error."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fetch_url(url, staging, retries=0)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_pulls_of_one_url_both_succeed_in_every_trial(hub, hub_server, tmp_path):
    weights = lora_safetensors(rank=8)
    hub.add_static(NAME, weights)
    url = hub_server.static_url(NAME)
    want = hashlib.sha256(weights).hexdigest()
    failures = []
    for trial in range(TRIALS):
        staging = tmp_path / f"trial-{trial}"
        results = fetch_together(url, staging)
        failures += [(trial, r) for r in results if isinstance(r, BaseException)]
        got = [r for r in results if not isinstance(r, BaseException)]
        assert all(r.sha256 == want and r.path.read_bytes() == weights for r in got), trial
        if len(got) == 2:
            assert got[0].path != got[1].path  # each pull owns its complete file: removing one spares the other
            # nothing else is left: no partial, no state, no lock
            assert sorted(p.name for p in staging.iterdir()) == sorted(r.path.name for r in got)
    assert failures == [], f"{len(failures)} of {2 * TRIALS} pulls failed: {failures[:3]}"


def test_an_interrupted_partial_is_resumed_by_the_next_pulls_even_together(hub, hub_server, tmp_path):
    weights = lora_safetensors(rank=8)
    hub.add_static(NAME, weights)
    url = hub_server.static_url(NAME)
    hub.drop("static", NAME, after=200_000)
    try:
        fetch_url(url, tmp_path, retries=0)
    except Exception as exc:  # the cut download keeps its partial for a resume
        assert getattr(exc, "code", None) == "network", exc
    assert staging_paths(url, tmp_path).part.stat().st_size == 200_000
    results = fetch_together(url, tmp_path)
    assert [type(r).__name__ for r in results] == ["FetchedFile", "FetchedFile"], results
    assert all(r.path.read_bytes() == weights for r in results)
    ranges = [g.headers.get("Range") for g in hub.requests_to("/static/", "GET")[1:]]
    assert "bytes=200000-" in ranges  # one of the two took up the partial; the other found it finished


def test_a_lock_file_left_by_a_killed_pull_does_not_block(hub, hub_server, tmp_path):
    weights = lora_safetensors()
    hub.add_static(NAME, weights)
    url = hub_server.static_url(NAME)
    lock = staging_paths(url, tmp_path).lock
    lock.write_bytes(b"")  # what kill -9 leaves: the file, not the lock (the kernel drops that)
    got = fetch_url(url, tmp_path)
    assert got.path.read_bytes() == weights and not lock.exists()


def test_two_lora_pull_processes_of_one_url_both_succeed(hub, hub_server, tmp_path, tmp_home):
    # the way the issue found it: two real `lora pull` processes into one library
    hub.add_static(NAME, lora_safetensors(rank=8))
    url = hub_server.static_url(NAME)
    env = {**os.environ, "COLUMNS": "200"}
    for trial in range(2):
        env["LORAHUB_HOME"] = str(tmp_path / f"home-{trial}")
        procs = [subprocess.Popen([sys.executable, "-m", "lorahub_cli", "pull", url, "--json"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [(*p.communicate(timeout=300), p.returncode) for p in procs]
        assert [rc for _, _, rc in outs] == [0, 0], outs
        assert len({json.loads(out)["sha256"] for out, _, _ in outs}) == 1, outs
        listed = subprocess.run([sys.executable, "-m", "lorahub_cli", "list", "--json"], env=env, text=True,
                                capture_output=True)
        assert len(json.loads(listed.stdout)) == 1, listed
