"""(IA)^3 applied exactly against the base weight: on SD1.5's real module tables, through the Python API (as
generate applies it), and fused into a folder and into single files, each against a float64 reference of
LyCORIS' definition ``W * (1 + w * v)``, ``v`` along the output rows or (on_input) the input channels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lorahub_cli.archs.naming import kohya_name
from tests.lycoris.forms import layers, live_weight as _live, stem


def reference(w0: torch.Tensor, vector: torch.Tensor, on_input: bool, weight: float) -> torch.Tensor:
    """``W * (1 + weight * v)`` in float64, written with broadcasting over the weight's own shape."""
    w = w0.to(torch.float64)
    v = vector.to(torch.float64).reshape(-1)
    shape = [1] * w.dim()
    shape[1 if on_input else 0] = -1
    return w * (1 + weight * v.reshape(shape))


def _vector(g: torch.Generator, w_shape, on_input: bool) -> torch.Tensor:
    """As LyCORIS stores it: [dim] for a Linear, [1, dim, 1, 1] for a conv."""
    dim = w_shape[1] if on_input else w_shape[0]
    v = torch.randn(dim, generator=g) * 0.3
    return v.reshape(1, dim, 1, 1) if len(w_shape) == 4 else v


def _rel(got: torch.Tensor, want: torch.Tensor, w0: torch.Tensor) -> float:
    return float((got.to(torch.float64) - want).norm() / (want - w0.to(torch.float64)).norm())


@pytest.mark.parametrize("on_input", [False, True])
def test_exact_on_sd15_tables(tmp_path, on_input):
    """Read from a kohya-named file on SD1.5's real tables (Linear, 1x1 and 3x3 convs, CLIP), applied by the
    stack's own ``merged_update`` against a random fp32 base weight: rel. error < 1e-6 against float64."""
    from lorahub_cli.compat.on_base import pairs_from_keymap
    from lorahub_cli.convert.keymap import canonical_tables, map_layout
    from lorahub_cli.convert.load import read_source
    from lorahub_cli.pipeline.stack import merged_update

    g = torch.Generator().manual_seed(5)
    tensors, truth = {}, {}
    for component, name, layer in layers():
        shape = (layer.out_features, layer.in_features, *(layer.kernel or ()))
        v = _vector(g, shape, on_input)
        tensors[f"{stem(component, name)}.weight"] = v
        tensors[f"{stem(component, name)}.on_input"] = torch.tensor(int(on_input))
        truth[f"{component}.{name}"] = (shape, v)
    path = tmp_path / "ia3.safetensors"
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sd_v1", "ss_network_module": "lycoris.kohya"})
    source = read_source(path)
    assert source.layout.network == "ia3" and source.layout.format == "lycoris"
    adapter = pairs_from_keymap(source, map_layout(source.layout, "sd1"), canonical_tables("sd1"))
    assert set(adapter.modules) == set(truth)
    for key, (shape, v) in truth.items():
        w0 = torch.randn(*shape, generator=g) * 0.05
        got = merged_update([(adapter.modules[key], 0.8)], "cpu", w0).reshape(shape) + w0
        assert _rel(got, reference(w0, v, on_input, 0.8), w0) < 1e-6, key


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.fixtures.pipelines import make_tiny_sd_pipeline
    from tests.pipeline.helpers import load_plain

    root = tmp_path_factory.mktemp("ia3-apply")
    base = make_tiny_sd_pipeline(root / "tiny-sd", seed=0)
    plain = load_plain(base)
    plan = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": True,    # 64 x 32: in != out
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v": False,
            "unet.down_blocks.0.resnets.0.conv1": True,                                # 3x3 conv, per channel
            "unet.down_blocks.1.attentions.0.proj_in": False,
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": False}
    g = torch.Generator().manual_seed(13)
    tensors, truth = {}, {}
    for key, on_input in plan.items():
        component, name = key.split(".", 1)
        w0 = _live(plain, key).detach().clone()
        v = _vector(g, tuple(w0.shape), on_input)
        s = kohya_name("lora_unet" if component == "unet" else "lora_te", name.removeprefix("text_model."))
        tensors[f"{s}.weight"] = v
        tensors[f"{s}.on_input"] = torch.tensor(int(on_input))
        truth[key] = (w0, v, on_input)
    path = root / "ia3.safetensors"
    save_file(tensors, str(path))
    return SimpleNamespace(base=base, path=path, truth=truth, root=root)



def test_pipeline_applies_ia3_exactly(tiny, tmp_path):
    from lorahub_cli.pipeline.api import Library

    with Library(tmp_path / "home") as lib:
        pipe = lib.pipeline(tiny.base, {str(tiny.path): 0.6}, device="cpu")
    assert not pipe.lorahub.report.skipped and pipe.lorahub.report.layers == len(tiny.truth)
    for key, (w0, v, on_input) in tiny.truth.items():
        assert _rel(_live(pipe, key).detach(), reference(w0, v, on_input, 0.6), w0) < 1e-6, key


def test_fuse_folder_writes_ia3_exactly(tiny, tmp_path):
    from lorahub_cli.pipeline.api import Library
    from tests.pipeline.helpers import load_plain

    with Library(tmp_path / "home") as lib:
        lib.fuse(tiny.base, {str(tiny.path): 1.0}, tmp_path / "fused", dtype="fp32")
    fused = load_plain(tmp_path / "fused")
    for key, (w0, v, on_input) in tiny.truth.items():
        assert _rel(_live(fused, key).detach(), reference(w0, v, on_input, 1.0), w0) < 1e-6, key


def _single_file(folder, path):
    from diffusers import StableDiffusionPipeline

    from lorahub_cli.checkpoints.original import to_original

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    tensors = to_original({c: getattr(pipe, c).state_dict() for c in ("unet", "vae", "text_encoder")}, "unknown")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _read_layer(path, key):
    """A canonical layer's weight in an original-layout file, through the same ``layer_sources`` fuse uses."""
    from lorahub_cli.archs.single_file import layer_sources

    with safe_open(str(path), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        src = layer_sources(shapes)[key]
        t = f.get_tensor(src.key)
    t = t[src.start:src.stop] if src.start is not None else t
    return t.T if src.transposed else t


@pytest.mark.parametrize("source", ["folder", "checkpoint"])
def test_fuse_single_file_writes_ia3_exactly(tiny, tmp_path, source):
    from lorahub_cli.pipeline.api import Library

    base = tiny.base if source == "folder" else _single_file(tiny.base, tmp_path / "base.safetensors")
    out = tmp_path / "fused.safetensors"
    with Library(tmp_path / "home") as lib:
        lib.fuse_single_file(str(base), {str(tiny.path): 0.9}, out, dtype="fp32")
    for key, (w0, v, on_input) in tiny.truth.items():
        got = _read_layer(out, key).reshape(w0.shape)
        assert _rel(got, reference(w0, v, on_input, 0.9), w0) < 1e-6, key


def test_inspect_labels_it_and_convert_says_a_base_is_needed(tiny, run_cli, tmp_path):
    res = run_cli("inspect", str(tiny.path), "--json")
    assert res.returncode == 0, res.stderr
    row = res.json()[0]
    assert (row["format"], row["network"], row["n_modules"]) == ("lycoris", "ia3", len(tiny.truth))
    out = tmp_path / "out.safetensors"
    res = run_cli("convert", str(tiny.path), "--to", "lora", "--rank", "2", "-o", str(out), "--json")
    assert res.returncode != 0 and res.json()["error"]["code"] == "needs-base", res.stdout
    assert "(IA)^3" in res.json()["error"]["message"] and not out.exists()


def test_a_vector_of_the_wrong_length_is_refused(tiny, tmp_path):
    from lorahub_cli.errors import LoraError
    from lorahub_cli.pipeline.api import Library

    s = kohya_name("lora_unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")
    bad = tmp_path / "bad.safetensors"
    save_file({f"{s}.weight": torch.ones(48), f"{s}.on_input": torch.tensor(1)}, str(bad))
    with Library(tmp_path / "home") as lib, pytest.raises(LoraError) as err:
        lib.pipeline(tiny.base, {str(bad): 1.0}, device="cpu")
    assert "48 values" in str(err.value)


def test_inspect_reads_the_weights_dtype_and_refuses_flags_alone(tiny, run_cli, tmp_path):
    res = run_cli("inspect", str(tiny.path), "--json")
    assert res.json()[0]["dtype"] == "F32", res.stdout   # the int on_input flags are not the weights
    flags = tmp_path / "flags.safetensors"
    save_file({"lora_unet_down_blocks_0_resnets_0_conv1.on_input": torch.tensor(1)}, str(flags))
    res = run_cli("inspect", str(flags), "--json")
    assert res.returncode != 0 and res.json()[0]["error"]["code"] == "not-a-lora", res.stdout


def test_the_peft_stack_refuses_ia3_rather_than_apply_it_wrongly(tiny, tmp_path):
    from lorahub_cli.errors import UsageError
    from lorahub_cli.pipeline.api import Library

    with Library(tmp_path / "home") as lib, pytest.raises(UsageError) as err:
        lib.pipeline(tiny.base, {str(tiny.path): 1.0}, stack="peft", device="cpu")
    assert "(IA)^3" in str(err.value)
