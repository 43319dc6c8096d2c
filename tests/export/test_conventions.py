"""Conventions in every file we write: kohya's ss_* and ModelSpec's required keys in converted and merged files
(trained ones: tests/train/test_finetune.py), so A1111 files SDXL and SD2 LoRAs under the right version."""

from __future__ import annotations

import pytest

from lorahub_cli.export.conventions import ecosystem_metadata
from tests.registry.helpers import write_kohya_sd1


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def a1111_version(meta: dict) -> str:
    """A1111's detect_version rule (extensions-builtin/Lora/network.py), re-stated."""
    if str(meta.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    if str(meta.get("ss_v2", "")) == "True":
        return "SD2"
    return "SD1" if meta else "Unknown"


@pytest.mark.parametrize("family, version", [("sd15", "SD1"), ("sd21", "SD2"), ("sdxl", "SDXL")])
def test_converted_files_carry_the_version_a1111_reads(tmp_path, run_cli, family, version):
    from tests.fixtures.adapters import write_adapter

    src = write_adapter(tmp_path / "src.safetensors", family, "diffusers")   # no ss_* keys at all
    assert a1111_version({k: v for k, v in _metadata(src).items() if not k.startswith("ss_")}) in ("SD1", "Unknown")
    out = tmp_path / "out.safetensors"
    r = run_cli("convert", src, "--to", "kohya", "-o", out)
    assert r.returncode == 0, r
    meta = _metadata(out)
    assert a1111_version(meta) == version
    for key in ("sai_model_spec", "architecture", "implementation", "title", "resolution"):
        assert meta[f"modelspec.{key}"], key
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"


def test_a_sources_own_keys_win(tmp_path, run_cli):
    src = write_kohya_sd1(tmp_path / "src.safetensors", seed=1, metadata={"ss_base_model_version": "sd_v1",
                                                                         "modelspec.title": "mine"})
    out = tmp_path / "out.safetensors"
    assert run_cli("convert", src, "--to", "diffusers", "-o", out).returncode == 0
    meta = _metadata(out)
    assert meta["modelspec.title"] == "mine" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"


def test_merged_files_carry_the_version_a1111_reads(tmp_path, run_cli):
    a = write_kohya_sd1(tmp_path / "a.safetensors", seed=1)
    b = write_kohya_sd1(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "merged.safetensors"
    r = run_cli("merge", a, b, "-o", out)
    assert r.returncode == 0, r
    meta = _metadata(out)
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["modelspec.resolution"] == "512x512"
    assert meta["modelspec.title"] and meta["modelspec.implementation"] == "diffusers"


def test_no_modelspec_is_invented_for_an_unknown_family():
    meta = ecosystem_metadata("unknown", title="x", rank=4, alpha=2)
    assert meta == {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0"}
    v = ecosystem_metadata("sd2", title="x", v_prediction=True)
    assert v["ss_base_model_version"] == "sd_v2_v" and v["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"


def test_written_files_carry_their_own_tensor_hash_never_a_sources(tmp_path, run_cli):
    from lorahub_cli.export.conventions import data_sha256

    src = write_kohya_sd1(tmp_path / "src.safetensors", seed=3,
                          metadata={"sshs_model_hash": "ab" * 32, "modelspec.hash_sha256": "0x" + "ab" * 32})
    out = tmp_path / "out.safetensors"
    assert run_cli("convert", src, "--to", "diffusers", "-o", out).returncode == 0
    meta = _metadata(out)
    assert meta["sshs_model_hash"] == data_sha256(out) != "ab" * 32
    assert meta["modelspec.hash_sha256"] == "0x" + data_sha256(out)
    merged = tmp_path / "merged.safetensors"
    assert run_cli("merge", src, out, "-o", merged).returncode == 0
    assert _metadata(merged)["sshs_model_hash"] == data_sha256(merged)
    # the library's AutoV3 is the same hash
    assert run_cli("add", merged).returncode == 0
    assert run_cli("show", "merged", "--json").json()["tensor_sha256"] == data_sha256(merged)
