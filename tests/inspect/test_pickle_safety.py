"""Pickles: planted payloads are refused with unsafe-pickle and never run (a marker file proves it); legitimate
payload shapes (state_dict wrapper, bare list, aliases, strided views, half-precision dtypes) read correctly.

The malicious pickles are built here with pickle.dumps (which only serialises; nothing is executed; fix_imports=False
keeps Python 3 module names, e.g. subprocess rather than commands) and are only
ever given to read_container. Nothing in this file unpickles them any other way.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.containers import read_container
from lorahub_cli.inspect.pickle_reader import load_pickle_tensors, pickle_globals

torch = pytest.importorskip("torch")


class _Reduce:
    """Pickles as a call to ``func(*args)``: the classic __reduce__ gadget."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Gadget:
    """A class whose unpickling would run code in __setstate__ (a BUILD gadget)."""

    def __setstate__(self, state):
        Path(state["marker"]).write_text("ran")


def _payloads(marker: Path) -> dict[str, object]:
    touch = f"open({str(marker)!r}, 'w').write('ran')"
    gadget = Gadget()
    gadget.__dict__["marker"] = str(marker)
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.eval": _Reduce(builtins.eval, touch),
        "builtins.exec": _Reduce(builtins.exec, touch),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        "Gadget": gadget,
    }


def _expected_global(name: str) -> str:
    return {"os.system": os.system.__module__ + ".system"}.get(name, name)  # posix.system on Linux


def _assert_refused(path: Path, marker: Path, global_name: str) -> None:
    with pytest.raises(LoraError) as info:
        read_container(path)
    assert info.value.code == "unsafe-pickle", info.value.message
    assert global_name in info.value.message, info.value.message
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "Gadget"])
def test_plain_pickle_payload_is_refused(tmp_path, name, protocol):
    marker = tmp_path / "PWNED"
    path = tmp_path / "pytorch_lora_weights.bin"
    path.write_bytes(pickle.dumps({"lora.up.weight": _payloads(marker)[name]}, protocol=protocol, fix_imports=False))
    _assert_refused(path, marker, _expected_global(name))


def _swap_data_pkl(checkpoint: Path, new_pickle: bytes, out: Path) -> None:
    """Rebuild a real torch.save zip with its data.pkl replaced (every other member kept as it was)."""
    with zipfile.ZipFile(checkpoint) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = new_pickle if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info, data)


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "Gadget"])
def test_payload_inside_a_torch_zip_is_refused(tmp_path, name):
    marker = tmp_path / "PWNED"
    real = tmp_path / "real.pt"
    torch.save({"lora.up.weight": torch.zeros(4, 2)}, real)
    assert read_container(real).tensors["lora.up.weight"].shape == (4, 2)  # the untouched archive is fine
    evil = tmp_path / "evil.pt"
    _swap_data_pkl(real, pickle.dumps({"lora.up.weight": _payloads(marker)[name]}, protocol=2, fix_imports=False), evil)
    _assert_refused(evil, marker, _expected_global(name))


def test_payload_in_a_legacy_checkpoint_is_refused(tmp_path):
    """The pre-zip torch format: magic number, protocol, sys info, then the object (here a payload)."""
    marker = tmp_path / "PWNED"
    legit = tmp_path / "legit.pt"
    torch.save({"w": torch.ones(2)}, legit, _use_new_zipfile_serialization=False)
    assert read_container(legit).tensors["w"].shape == (2,)
    buf = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True},
                 {"w": _payloads(marker)["os.system"]}):
        pickle.dump(part, buf, protocol=2, fix_imports=False)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(buf.getvalue())
    _assert_refused(evil, marker, _expected_global("os.system"))


def test_globals_are_found_by_disassembly_only(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "a.bin"
    path.write_bytes(pickle.dumps([_payloads(marker)["subprocess.Popen"]], protocol=4))  # STACK_GLOBAL + memo
    assert "subprocess.Popen" in pickle_globals(path)
    assert not marker.exists()


def test_corpus_unsafe_pickle_names_the_global(corpus_dir):
    with pytest.raises(LoraError) as info:
        read_container(corpus_dir / "NEG_monsy101_fake_lora_unsafe_pickle.bin")
    assert info.value.code == "unsafe-pickle"
    assert "peft.utils.peft_types.PeftType" in info.value.message
    assert info.value.hint


def test_protocol_4_checkpoint_is_refused_not_forced(tmp_path):
    """torch's weights-only loader does not accept protocol-4 framing; we say so rather than unpickle it."""
    path = tmp_path / "p4.pt"
    torch.save({"w": torch.ones(2)}, path, pickle_protocol=4)
    with pytest.raises(LoraError) as info:
        read_container(path)
    assert info.value.code == "unsafe-pickle" and "FRAME" in info.value.message
    assert "weights-only" in info.value.hint


# --- legitimate payloads ----------------------------------------------------------------------------
def test_state_dict_wrapper_is_unwrapped(tmp_path):
    up = torch.randn(8, 4)
    torch.save({"state_dict": {"m.lora_up.weight": up, "m.alpha": torch.tensor(4.0)}, "epoch": 3}, tmp_path / "a.ckpt")
    raw = read_container(tmp_path / "a.ckpt")
    assert set(raw.tensors) == {"m.lora_up.weight", "m.alpha"}
    assert raw.read_values("m.alpha") == 4.0
    assert any("state_dict" in n and "epoch" in n for n in raw.notes)
    np.testing.assert_array_equal(load_pickle_tensors(tmp_path / "a.ckpt")["m.lora_up.weight"].numpy(), up.numpy())


def test_bare_list_names_follow_the_shapes_and_the_file_name_breaks_ties(tmp_path):
    tensors = [torch.zeros(320, 4), torch.ones(4, 320), torch.zeros(640, 4), torch.ones(4, 640)]
    torch.save(tensors, tmp_path / "lora_weight.pt")
    torch.save(tensors, tmp_path / "lora_weight.text_encoder.pt")
    unet = read_container(tmp_path / "lora_weight.pt")
    assert list(unet.tensors) == ["unet:0:up", "unet:0:down", "unet:1:up", "unet:1:down"]
    assert unet.tensors["unet:1:down"].shape == (4, 640)
    assert any("bare positional list" in n for n in unet.notes)
    named_te = read_container(tmp_path / "lora_weight.text_encoder.pt")   # U-Net widths: the shapes win
    assert list(named_te.tensors)[:2] == ["unet:0:up", "unet:0:down"]
    te = [torch.zeros(768, 4), torch.ones(4, 768)] * 2
    torch.save(te, tmp_path / "renamed.pt")
    assert list(read_container(tmp_path / "renamed.pt").tensors)[:1] == ["text_encoder:0:up"]
    vectors = [torch.zeros(4), torch.ones(4)]   # no pair shapes at all: only the name can say
    torch.save(vectors, tmp_path / "v.text_encoder.pt")
    assert list(read_container(tmp_path / "v.text_encoder.pt").tensors)[0] == "text_encoder:0:up"


def test_nested_dicts_flatten_and_scalars_become_metadata(tmp_path):
    payload = {"unet": {"a": {"lora_A": torch.ones(2, 3)}}, "rank": 4, "name": "style", "scale": 0.5,
               "layers": [torch.zeros(1), torch.ones(1)], "nothing": None}
    torch.save(payload, tmp_path / "a.pt")
    raw = read_container(tmp_path / "a.pt")
    assert set(raw.tensors) == {"unet.a.lora_A", "layers.0", "layers.1"}
    assert raw.metadata == {"rank": "4", "name": "style", "scale": "0.5"}
    assert any("nothing (NoneType)" in n for n in raw.notes)


def test_pickle_without_tensors_reads_as_empty(tmp_path):
    torch.save({"r": 4, "alpha": 8}, tmp_path / "config.bin")
    raw = read_container(tmp_path / "config.bin")
    assert raw.tensors == {} and raw.metadata == {"r": "4", "alpha": "8"}
    assert any("no tensors" in n for n in raw.notes)


def test_shared_and_strided_tensors_are_separated(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    payload = {"a": base, "alias": base, "row": base[1], "t": base.t()}  # one storage, four names
    torch.save(payload, tmp_path / "shared.bin")
    raw = read_container(tmp_path / "shared.bin")
    assert raw.tensors["t"].shape == (4, 3) and raw.tensors["row"].shape == (4,)
    np.testing.assert_array_equal(raw.read_values("t"), base.t().numpy())
    assert any("sharing one storage" in n for n in raw.notes)

    loaded = load_pickle_tensors(tmp_path / "shared.bin")
    pointers = {t.untyped_storage().data_ptr() for t in loaded.values()}
    assert len(pointers) == 4 and all(t.is_contiguous() for t in loaded.values())
    for name, t in payload.items():
        assert torch.equal(loaded[name], t), name
    from safetensors.torch import load_file, save_file  # the converter's next step must accept the result

    save_file(loaded, str(tmp_path / "out.safetensors"))
    assert torch.equal(load_file(str(tmp_path / "out.safetensors"))["t"], base.t())


@pytest.mark.parametrize("dtype, name", [(torch.float16, "F16"), (torch.bfloat16, "BF16"), (torch.float32, "F32"),
                                         (torch.int64, "I64"), (torch.bool, "BOOL")])
def test_dtypes_are_kept(tmp_path, dtype, name):
    t = torch.tensor([[1.5, -2.0], [0.0, 3.0]]).to(dtype)
    torch.save({"w": t}, tmp_path / "a.pt")
    raw = read_container(tmp_path / "a.pt")
    assert raw.tensors["w"].dtype == name and raw.tensors["w"].offsets is None
    values = raw.read_values("w")
    np.testing.assert_array_equal(values, t.double().numpy() if dtype.is_floating_point else t.numpy())
    if dtype.is_floating_point:
        assert values.dtype == np.float64
    assert load_pickle_tensors(tmp_path / "a.pt")["w"].dtype == dtype


def test_parameters_load_as_plain_tensors(tmp_path):
    torch.save({"w": torch.nn.Parameter(torch.ones(2, 2))}, tmp_path / "a.pt")
    loaded = load_pickle_tensors(tmp_path / "a.pt")["w"]
    assert type(loaded) is torch.Tensor and not loaded.requires_grad
