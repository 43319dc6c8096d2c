"""`lora convert` as users and scripts run it: a real subprocess, JSON on stdout, exit statuses."""

from __future__ import annotations

import pickle

from safetensors import safe_open

from tests.fixtures.adapters import write_adapter


def test_convert_a_pickle_with_json_then_refuse_to_overwrite(tmp_path, run_cli):
    src = write_adapter(tmp_path / "pytorch_lora_weights.bin", "sd15", "attn-procs-bin", rank=4)
    first = run_cli("convert", src, "--json")
    assert first.returncode == 0, first
    result = first.json()
    out = tmp_path / "pytorch_lora_weights.diffusers.safetensors"
    assert result["dst"] == str(out) and result["target"] == "diffusers" and result["verified"] is True
    assert result["source_format"] == "attn-procs" and result["source_container"] == "pickle"
    assert result["family"] == "sd1" and result["n_modules"] == 128
    with safe_open(str(out), framework="pt") as f:
        assert all(k.startswith("unet.") and ".lora_" in k for k in f.keys())
        assert f.metadata()["lorahub.source_sha256"] == result["source_sha256"]
    again = run_cli("convert", src, "--json")   # refused before any work is done
    assert again.returncode == 1 and again.json()["error"]["code"] == "already-exists"


def test_human_output_for_kohya_and_usage_errors(tmp_path, run_cli):
    src = write_adapter(tmp_path / "style.safetensors", "sd15", "diffusers-old", rank=4, components=["unet"])
    (tmp_path / "a1111").mkdir()
    (tmp_path / "a1111" / "style.safetensors").write_bytes(b"an older file")
    done = run_cli("convert", src, "--to", "kohya", "-o", tmp_path / "a1111" / "style.safetensors", "--force")
    assert done.returncode == 0, done
    assert "verified" in done.stdout and "kohya layout" in done.stdout
    with safe_open(str(tmp_path / "a1111" / "style.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
               for k in keys) and len(keys) == 3 * 128
    wrong = run_cli("convert", src, "--to", "ckpt")
    assert wrong.returncode == 2 and "ckpt" in wrong.stderr


def test_a_planted_pickle_fails_with_unsafe_pickle_and_runs_nothing(tmp_path, run_cli):
    import os

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "lora.bin"
    evil.write_bytes(pickle.dumps({"unet.x.lora.down.weight": Payload()}, protocol=2))
    proc = run_cli("convert", evil, "--json")
    assert proc.returncode == 1
    assert proc.json()["error"]["code"] == "unsafe-pickle"
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.bin"]


def test_the_written_file_has_the_permissions_of_an_ordinary_new_file(tmp_path, run_cli):
    """The temp file behind the atomic write is private (0600); the converted adapter is the user's to share."""
    import os

    src = write_adapter(tmp_path / "style.safetensors", "sd15", "diffusers-old", rank=4, components=["unet"])
    result = run_cli("convert", src, "--json")
    assert result.returncode == 0, result
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(result.json()["dst"]).st_mode & 0o777 == 0o666 & ~umask


def test_an_output_named_like_a_pickle_is_written_with_a_warning(tmp_path, run_cli):
    src = write_adapter(tmp_path / "style.safetensors", "sd15", "diffusers-old", rank=4, components=["unet"])
    result = run_cli("convert", src, "-o", tmp_path / "style.bin", "--json")
    assert result.returncode == 0, result
    assert (tmp_path / "style.bin").read_bytes()[8:9] == b"{"
    assert any("suffix" in w for w in result.json()["warnings"])
    plain = run_cli("convert", src, "--json")
    assert not any("suffix" in w for w in plain.json()["warnings"])
