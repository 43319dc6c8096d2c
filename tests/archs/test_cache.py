"""The table cache: built once on the meta device, then read back in milliseconds without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lorahub_cli.archs import module_table
from lorahub_cli.archs.tables import Layer

REPO = Path(__file__).resolve().parents[2]

WARM_PROBE = """
import json, sys, time
from pathlib import Path
from lorahub_cli.archs import module_table
start = time.perf_counter()
table = module_table("sdxl", "unet", cache_dir=Path(sys.argv[1]))
elapsed = time.perf_counter() - start
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps({"n": len(table), "seconds": elapsed, "heavy": heavy,
                  "to_k": table["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"].in_features}))
"""


def test_warm_call_reads_json_without_importing_torch(tmp_path):
    cold = module_table("sdxl", "unet", cache_dir=tmp_path)
    files = list(tmp_path.glob("unet-*.json"))
    assert len(files) == 1
    proc = subprocess.run([sys.executable, "-c", WARM_PROBE, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout)
    assert probe["heavy"] == []
    assert probe["n"] == len(cold) == 794
    assert probe["to_k"] == 2048
    assert probe["seconds"] < 0.5   # typically a few milliseconds; generous for a loaded machine


def test_cache_goes_under_lorahub_home(tmp_home, monkeypatch):
    monkeypatch.delenv("LORAHUB_CACHE_DIR", raising=False)   # the suite shares one cache; a user has none
    table = module_table("sd15", "text_encoder")
    files = list((tmp_home / "cache" / "modules").glob("text_encoder-*.json"))
    assert len(files) == 1
    assert len(json.loads(files[0].read_text())["layers"]) == len(table) == 72


def test_damaged_cache_file_is_rebuilt(tmp_path):
    module_table("sd21", "text_encoder", cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("text_encoder-*.json")
    cache_file.write_text("{not json")
    other = tmp_path / "other"   # a fresh in-process memo key, so the damaged file is really read
    other.mkdir()
    (other / cache_file.name).write_text("{not json")
    table = module_table("sd21", "text_encoder", cache_dir=other)
    assert table["text_model.encoder.layers.0.self_attn.q_proj"] == Layer("linear", 1024, 1024)
    assert json.loads((other / cache_file.name).read_text())["schema"] == 1


def test_cache_key_follows_the_config(tmp_path):
    module_table("sd15", "text_encoder", cache_dir=tmp_path)
    module_table("sdxl", "text_encoder", cache_dir=tmp_path)   # same class, different config bytes
    assert len(list(tmp_path.glob("text_encoder-*.json"))) == 2


def test_returned_table_is_a_copy(tmp_path):
    first = module_table("sd15", "text_encoder", cache_dir=tmp_path)
    first.clear()
    assert len(module_table("sd15", "text_encoder", cache_dir=tmp_path)) == 72
