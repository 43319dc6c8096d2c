"""`lora generate / recipe / fuse` as users run them. Most calls go through ``__main__.main`` in this process
(the same code path as the console script, without paying torch's import again); the re-run from an image
runs in a fresh process, so nothing but the PNG carries the recipe across."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.pipeline.helpers import PROMPT, STEPS, load_plain, render


@pytest.fixture
def lora(lib_env, capsys):
    """Run `lora ARGS...` in this process: (exit status, stdout, stderr)."""
    from lorahub_cli.__main__ import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_generate_then_recipe_then_rerun_from_the_image(lora, lib_env, run_cli, tmp_path):
    # two separate processes, as a user would run them (an in-process run may use other torch thread settings)
    home = {"LORAHUB_HOME": str(lib_env.home)}
    first = run_cli("generate", PROMPT, "--base", lib_env.base, "-a", "style:0.8", "-a", "subject:-0.5",
                    "--steps", STEPS, "--seed", 7, "--size", "32x32", "--scheduler", "euler",
                    "-o", tmp_path / "shots", "--json", env=home)
    assert first.returncode == 0, first
    [shot] = first.json()
    path = tmp_path / "shots" / "00001-7.png"
    assert shot["path"] == str(path) and path.is_file()

    code, out, err = lora("recipe", path, "--json")
    assert code == 0, err
    recipe = json.loads(out)
    from registry.api import Registry

    with Registry(home=lib_env.home) as reg:
        shas = {n: reg.get(n).sha256 for n in ("style", "subject")}
        tensors = {n: reg.get(n).tensor_sha256 for n in ("style", "subject")}
    assert recipe["source"] == "lorahub" and recipe["prompt"] == PROMPT and recipe["seed"] == 7
    assert (recipe["steps"], recipe["scheduler"], recipe["width"], recipe["height"]) == (STEPS, "euler", 32, 32)
    assert recipe["base_id"] == str(lib_env.base.resolve())
    assert recipe["adapters"] == [
        {"name": "style", "sha256": shas["style"], "weight": 0.8, "tensor_sha256": tensors["style"]},
        {"name": "subject", "sha256": shas["subject"], "weight": -0.5, "tensor_sha256": tensors["subject"]}]
    code, out, _ = lora("recipe", path)
    assert code == 0 and "subject" in out and "euler" in out

    again = run_cli("generate", "--from", path, "-o", tmp_path / "again", env=home)
    assert again.returncode == 0, again
    assert np.array_equal(_pixels(tmp_path / "again" / "00001-7.png"), _pixels(path))
    assert "00001-7.png" in again.stdout


def test_batch_file_one_image_per_prompt_same_seed(lora, lib_env, tmp_path):
    batch = tmp_path / "prompts.txt"
    batch.write_text("lower newer\nwider lowest\n", encoding="utf-8")
    code, out, err = lora("generate", "--batch-file", batch, "--base", lib_env.base, "-a", "detail",
                          "--steps", STEPS, "--seed", 3, "-o", tmp_path / "b")
    assert code == 0, err
    files = sorted((tmp_path / "b").iterdir())
    assert [f.name for f in files] == ["00001-3.png", "00002-3.png"]
    assert not np.array_equal(_pixels(files[0]), _pixels(files[1]))
    assert out.count("wrote ") == 2


def test_fuse_saves_a_plain_diffusers_folder_equal_to_the_stack(lora, lib_env, tmp_path, umask_027):
    import stat

    weights = {"style": 0.8, "detail": 1.2}
    code, out, err = lora("fuse", "--base", lib_env.base, *[x for n, w in weights.items() for x in ("-a", f"{n}:{w}")],
                          "-o", tmp_path / "fused", "--json")
    assert code == 0, err
    # modes follow the umask (tempfile's mkdtemp alone would leave the folder 0o700)
    assert stat.S_IMODE((tmp_path / "fused").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "fused" / "lorahub_fuse.json").stat().st_mode) == 0o640
    result = json.loads(out)
    assert [a["name"] for a in result["adapters"]] == list(weights) and result["dtype"] == "fp32"
    provenance = json.loads((tmp_path / "fused" / "lorahub_fuse.json").read_text())
    assert provenance["adapters"] == result["adapters"]

    from safetensors import safe_open

    with safe_open(str(tmp_path / "fused" / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]
    fused = load_plain(tmp_path / "fused")          # plain diffusers, no lorahub, no peft
    stacked = load_plain(lib_env.base)
    for name in weights:
        stacked.load_lora_weights(str(lib_env.files[name]), adapter_name=f"ref_{name}")
    stacked.set_adapters([f"ref_{n}" for n in weights], adapter_weights=list(weights.values()))
    base = render(load_plain(lib_env.base))
    want = render(stacked)
    assert np.abs(want - base).max() > 1e-2
    np.testing.assert_allclose(render(fused), want, atol=1e-4, rtol=0)

    code, out, err = lora("fuse", "--base", lib_env.base, "-a", "style", "-o", tmp_path / "fused")
    assert code == 1 and "already-exists" in err


@pytest.mark.parametrize("args, code, needle", [
    (["--scheduler", "warp"], 2, "unknown-scheduler"),
    (["--size", "33x32"], 2, "multiples of"),
    (["-a", "no-such-adapter"], 1, "not-found"),
    (["--stack", "peft", "--fuse"], 2, "does not combine"),
    # NaN would render a blank image and print "guidance": NaN, which is not JSON
    (["--guidance", "nan"], 2, "--guidance must be a finite number"),
    (["--guidance", "inf"], 2, "--guidance must be a finite number"),
    (["--guidance", "-1"], 2, "--guidance must be a finite number"),
    # a library name followed by something that is not a weight: a usage error, not "not found"
    (["-a", "style:abc"], 2, "weight 'abc' of style must be a finite number"),
    (["-a", "style:nan"], 2, "must be a finite number"),
    (["-a", "style:1e309"], 2, "must be a finite number"),
])
def test_bad_requests_fail_with_clear_errors(lora, lib_env, tmp_path, args, code, needle):
    got, out, err = lora("generate", PROMPT, "--base", lib_env.base, "--steps", 1, "-o", tmp_path, *args)
    assert got == code and needle in err, err
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("spec", ["style:inf", "style:x"])
def test_fuse_refuses_a_weight_that_is_not_a_finite_number(lora, lib_env, tmp_path, spec):
    code, _, err = lora("fuse", "--base", lib_env.base, "-a", spec, "-o", tmp_path / "fused")
    assert code == 2 and "must be a finite number" in err, err
    assert not (tmp_path / "fused").exists()


def test_api_weights_must_be_finite(lib_env):
    from lorahub_cli.errors import UsageError
    from lorahub_cli.pipeline.adapters import parse_specs

    for bad in ({"style": float("nan")}, [("style", float("inf"))], {"style": "heavy"}):
        with pytest.raises(UsageError, match="finite number"):
            parse_specs(bad)


def test_incompatible_adapter_stops_the_run_with_the_reason(lora, lib_env, tmp_path):
    from tests.pipeline.helpers import random_adapter, write_diffusers

    wrong = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (64, 48)}  # the base reads 32
    bad = write_diffusers(random_adapter(wrong, list(wrong), rank=2, alpha=None, seed=1), tmp_path / "x.safetensors")
    code, out, err = lora("generate", PROMPT, "--base", lib_env.base, "-a", bad, "-o", tmp_path, "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "incompatible" and "input width 48" in error["message"]


def test_missing_bases_and_images_without_recipes(lora, lib_env, tmp_path):
    code, _, err = lora("generate", PROMPT, "--base", "nobody/not-cached-anywhere", "-o", tmp_path)
    assert code == 3 and "offline" in err
    code, _, err = lora("generate", PROMPT, "--base", tmp_path / "nothing-here", "-o", tmp_path)
    assert code == 1 and "not-found" in err
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    code, _, err = lora("generate", "--from", tmp_path / "plain.png", "-o", tmp_path)
    assert code == 1 and "no-recipe" in err
    code, _, err = lora("recipe", tmp_path / "plain.png")
    assert code == 1 and "no-recipe" in err
