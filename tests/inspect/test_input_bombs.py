"""H1/H2: bombs are refused from the opcodes and the zip directory, before anything is built, and a run on one
stays inside a 1.5 GB address space (a subprocess with RLIMIT_AS: a regression fails, it cannot eat the machine).
Legitimate shapes with sharing (a dict that holds itself) still read."""

from __future__ import annotations

import pytest

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.containers import read_container
from lorahub_cli.inspect.pickle_scan import scan_pickle
from tests.inspect import bombs

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("build", [bombs.memo_reuse_bomb, bombs.stride_zero_bomb, bombs.deflate_bomb],
                         ids=["memo-reuse", "stride-zero", "deflate"])
def test_a_bomb_is_refused_under_a_memory_cap(tmp_path, build):
    path = build(tmp_path / "bomb.pt")
    assert path.stat().st_size < 2 << 20
    proc = bombs.run_limited("inspect", "--json", str(path), home=tmp_path / "home")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert bombs.error_code(proc) == "pickle-bomb"


def test_a_sparse_file_that_starts_like_a_pickle_is_refused_without_reading_it(tmp_path):
    path = bombs.sparse_pickle_head(tmp_path / "big.bin")
    proc = bombs.run_limited("inspect", "--json", "--no-hash", str(path), home=tmp_path / "home")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert bombs.error_code(proc) == "corrupt-header"


def test_the_memo_bomb_is_refused_by_the_scan_alone(tmp_path):
    path = bombs.memo_reuse_bomb(tmp_path / "bomb.pt")
    with pytest.raises(LoraError) as err:
        scan_pickle(path, path.stat().st_size)
    assert err.value.code == "pickle-bomb"


def test_a_modest_fan_out_is_not_a_bomb(tmp_path):
    path = bombs.memo_reuse_bomb(tmp_path / "small.pt", levels=2, fan_out=100)   # 10,000 leaves
    scan = scan_pickle(path, path.stat().st_size)
    assert scan.storage_bytes == 0


def test_a_dict_that_holds_itself_is_read_once(tmp_path):
    state = {"m.lora_up.weight": torch.ones(4, 2), "m.lora_down.weight": torch.ones(2, 4)}
    state["again"] = state
    torch.save(state, tmp_path / "cycle.pt")
    raw = read_container(tmp_path / "cycle.pt")
    assert set(raw.tensors) == {"m.lora_up.weight", "m.lora_down.weight"}
    assert any("met before" in n for n in raw.notes)


def test_storage_and_tensor_bytes_are_counted(tmp_path):
    torch.save({"a": torch.ones(4, 2), "b": torch.ones(3, dtype=torch.float16)}, tmp_path / "ok.pt")
    torch.save({"a": torch.ones(4, 2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("ok.pt", "legacy.pt"):
        scan = scan_pickle(tmp_path / name, (tmp_path / name).stat().st_size)
        assert scan.complete and "torch._utils._rebuild_tensor_v2" in scan.globals
    assert scan_pickle(tmp_path / "ok.pt", 1).tensor_bytes == 4 * 2 * 4 + 3 * 2


def test_a_view_bomb_the_scan_cannot_see_is_refused_after_loading(tmp_path, monkeypatch):
    from lorahub_cli.inspect import pickle_scan

    monkeypatch.setattr(pickle_scan, "_TENSOR_REBUILDERS", ())   # as if torch wrote views some new way
    path = bombs.stride_zero_bomb(tmp_path / "bomb.pt")
    with pytest.raises(LoraError) as err:
        read_container(path)
    assert err.value.code == "pickle-bomb"
    assert "once made dense" in err.value.message


def test_a_nine_dimensional_view_bomb_is_seen_by_the_scan(tmp_path):
    torch.save({"w": torch.zeros(1).expand(*([20] * 9))}, tmp_path / "bomb.pt")   # 2e11 values from one
    with pytest.raises(LoraError) as err:
        scan_pickle(tmp_path / "bomb.pt", (tmp_path / "bomb.pt").stat().st_size)
    assert err.value.code == "pickle-bomb"


def test_a_torch_zip_whose_pickle_fails_its_crc_is_left_to_torch(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")   # the local header's
    start = info.header_offset + 30 + name_len + extra_len
    data[start + 5] ^= 0xFF   # inside the stored pickle: the CRC no longer matches
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    scan = scan_pickle(tmp_path / "bad.pt", len(data))   # no raw BadZipFile: torch is the one to judge
    assert not scan.complete
