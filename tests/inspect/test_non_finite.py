"""M2: NaN / infinite weights are no longer silent: inspect warns (``non-finite: ...``), in safetensors files from
the one hashing pass (the exponent bits, tested in place, elements cut by chunk boundaries included) and in
pickles from the values already loaded; a NaN alpha is seen even without hashing; add records the warning."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorahub_cli.inspect import inspect_file
from lorahub_cli.inspect.containers import read_container
from lorahub_cli.inspect.hashing import hash_file
from tests.fixtures.adapters import make_adapter, write_adapter

torch = pytest.importorskip("torch")


def _with_nan(path, *, alpha=False):
    tensors, meta = make_adapter("sd15", "kohya", alpha=1.0)
    key = next(k for k in tensors if k.endswith(".alpha" if alpha else "lora_up.weight"))
    tensors[key] = tensors[key].clone()
    tensors[key].reshape(-1)[-1] = float("nan") if alpha else float("inf")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file as save

        save({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    else:
        torch.save(tensors, path)
    return key


@pytest.mark.parametrize("name", ["a.safetensors", "a.pt"])
def test_an_infinite_weight_is_a_warning(tmp_path, name):
    key = _with_nan(tmp_path / name)
    report = inspect_file(tmp_path / name)
    (warning,) = [w for w in report.warnings if w.startswith("non-finite:")]
    assert key in warning


def test_a_nan_alpha_is_seen_without_hashing(tmp_path):
    _with_nan(tmp_path / "a.safetensors", alpha=True)
    report = inspect_file(tmp_path / "a.safetensors", hash=False)
    assert any(w.startswith("non-finite:") for w in report.warnings)


def test_a_finite_adapter_has_no_such_warning(tmp_path):
    report = inspect_file(write_adapter(tmp_path / "a.safetensors", "sd15", "kohya"))
    assert not any(w.startswith("non-finite") for w in report.warnings)


@pytest.mark.parametrize("chunk", [3, 4, 7, 64, 1 << 20])
def test_every_float_width_and_chunk_boundary(tmp_path, chunk):
    bf16_inf = np.array([0x3F80, 0x7F80], dtype="<u2")   # 1.0, +inf as bfloat16 bits
    tensors = {"h": np.array([1, 2, np.nan], dtype=np.float16), "f": np.array([1, -np.inf, 3], dtype=np.float32),
               "d": np.ones(5), "i": np.array([-1, 0x7F800000], dtype=np.int32), "b": bf16_inf}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    raw = read_container(tmp_path / "x.safetensors")
    raw.tensors["b"] = type(raw.tensors["b"])("BF16", (2,), raw.tensors["b"].offsets)   # the same bytes, as BF16
    hashes = hash_file(raw, [], chunk_size=chunk, threaded=False)
    assert sorted(hashes.nonfinite_keys) == ["b", "f", "h"]


def test_add_records_the_warning(tmp_path, tmp_home, run_cli):
    _with_nan(tmp_path / "a.safetensors")
    result = run_cli("add", "--json", "--name", "nan", tmp_path / "a.safetensors")
    assert result.returncode == 0, result
    shown = run_cli("show", "--json", "nan").json()
    assert any(w.startswith("non-finite:") for w in shown["warnings"])
