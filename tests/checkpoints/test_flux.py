"""Flux single files end to end: the transformer in BFL's layout (written from the tiny diffusers pipeline with the
project's naming rules), its VAE and text encoders as separate files, loaded offline through from_single_file and
compared with the source pipeline bit for bit; `fuse --single-file` from a Flux file and from a Flux folder."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.bases import add_base, resolve_base, with_parts
from lorahub_cli.errors import MissingComponent
from lorahub_cli.pipeline import Library
from lorahub_cli.pipeline.build import load_pipeline
from tests.pipeline.helpers import random_adapter, write_diffusers

PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")


def _weights(pipe, parts=PARTS) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in parts for k, v in getattr(pipe, c).state_dict().items()
            if not k.endswith("position_ids")}


def _source(tiny_flux) -> dict[str, torch.Tensor]:
    from diffusers import FluxPipeline

    return _weights(FluxPipeline.from_pretrained(tiny_flux["folder"], local_files_only=True))


def _differ(want: dict, got: dict) -> list[str]:
    assert set(want) == set(got)
    return [k for k in want if not torch.equal(want[k], got[k])]


def test_bfl_reader_equals_diffusers_converter_at_the_published_width():
    """At Flux's real width (3072, MLP 12288) the reader splits exactly as diffusers' own converter (which fixes
    that width); random bytes stand for the weights (the split never looks at values)."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from lorahub_cli.checkpoints.dit import flux_from_original

    d, m = 3072, 12288
    shapes = {"img_in": (d, 64), "txt_in": (d, 4096), "time_in.in_layer": (d, 256), "time_in.out_layer": (d, d),
              "vector_in.in_layer": (d, 768), "vector_in.out_layer": (d, d), "guidance_in.in_layer": (d, 256),
              "guidance_in.out_layer": (d, d), "final_layer.linear": (64, d),
              "final_layer.adaLN_modulation.1": (2 * d, d), "single_blocks.0.modulation.lin": (3 * d, d),
              "single_blocks.0.linear1": (3 * d + m, d), "single_blocks.0.linear2": (d, d + m)}
    for side in ("img", "txt"):
        shapes.update({f"double_blocks.0.{side}_mod.lin": (6 * d, d), f"double_blocks.0.{side}_attn.qkv": (3 * d, d),
                       f"double_blocks.0.{side}_attn.proj": (d, d), f"double_blocks.0.{side}_mlp.0": (m, d),
                       f"double_blocks.0.{side}_mlp.2": (d, m)})
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        state[f"{key}.weight"] = torch.randint(0, 255, shape, dtype=torch.uint8, generator=gen)
        state[f"{key}.bias"] = torch.randint(0, 255, shape[:1], dtype=torch.uint8, generator=gen)
    for key in ("double_blocks.0.img_attn.norm.query_norm", "double_blocks.0.img_attn.norm.key_norm",
                "double_blocks.0.txt_attn.norm.query_norm", "double_blocks.0.txt_attn.norm.key_norm",
                "single_blocks.0.norm.query_norm", "single_blocks.0.norm.key_norm"):
        state[f"{key}.scale"] = torch.randint(0, 255, (128,), dtype=torch.uint8, generator=gen)
    root = "model.diffusion_model."
    ours = flux_from_original({root + k: v for k, v in state.items()}, root)
    theirs = convert_flux_transformer_checkpoint_to_diffusers({root + k: v for k, v in state.items()})
    assert len(ours) == 66 and _differ(theirs, ours) == []


def test_bfl_file_round_trip_folder_file_folder(home, tiny_flux, tmp_path):
    """folder -> BFL single file -> pipeline (configs and the other parts from the folder) -> folder: every
    weight bit for bit, with HF_HUB_OFFLINE=1 and an empty cache."""
    base = resolve_base(str(tiny_flux["transformer"]))
    assert (base.family, base.holds, base.variants) == ("flux", ("transformer",), ("dev",))
    add_base(str(tiny_flux["transformer"]), name="tiny-flux", borrow=tiny_flux["folder"])
    pipe, _ = load_pipeline("tiny-flux", device="cpu", dtype="fp32")
    want = _source(tiny_flux)
    assert _differ(want, _weights(pipe)) == []
    pipe.save_pretrained(tmp_path / "again")
    from diffusers import FluxPipeline

    assert _differ(want, _weights(FluxPipeline.from_pretrained(tmp_path / "again", local_files_only=True))) == []


def test_transformer_only_file_with_parts_supplied_apart(home, run_cli, tiny_flux):
    """A BFL transformer with a configs-only folder: missing-component names each missing part and its flag; given
    as files (ae / clip_l / t5xxl layouts) or folders, they load bit for bit."""
    base = with_parts(resolve_base(str(tiny_flux["transformer"])), borrow=tiny_flux["configs"])
    with pytest.raises(MissingComponent) as err:
        load_pipeline(base, device="cpu", dtype="fp32")
    assert "text_encoder, text_encoder_2, vae" in err.value.message
    for flag in ("--vae", "--text-encoder", "--text-encoder-2"):
        assert flag in err.value.hint
    saved = run_cli("base", "add", str(tiny_flux["transformer"]), "--name", "parts", "--borrow",
                    str(tiny_flux["configs"]), "--vae", str(tiny_flux["vae"]), "--text-encoder",
                    str(tiny_flux["text_encoder"]), "--text-encoder-2", str(tiny_flux["text_encoder_2"]), "--json")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert set(saved.json()["parts"]) == {"vae", "text_encoder", "text_encoder_2"}
    said = run_cli("base", "add", str(tiny_flux["transformer"]), "--name", "parts", "--borrow",
                   str(tiny_flux["configs"]), "--vae", str(tiny_flux["vae"]))
    assert said.returncode == 0 and f"vae from {tiny_flux['vae']}" in "".join(said.stdout.split("\n"))
    saved = run_cli("base", "add", str(tiny_flux["transformer"]), "--name", "parts", "--borrow",
                    str(tiny_flux["configs"]), "--vae", str(tiny_flux["vae"]), "--text-encoder",
                    str(tiny_flux["text_encoder"]), "--text-encoder-2", str(tiny_flux["text_encoder_2"]), "--json")
    pipe, _ = load_pipeline("parts", device="cpu", dtype="fp32")
    want = _source(tiny_flux)
    assert _differ(want, _weights(pipe)) == []
    # folders too: a pipeline folder lends its subfolder, a component folder itself
    mixed = with_parts(base, parts={"vae": tiny_flux["folder"], "text_encoder": tiny_flux["folder"] / "text_encoder",
                                    "text_encoder_2": tiny_flux["text_encoder_2"]})
    pipe, _ = load_pipeline(mixed, device="cpu", dtype="fp32")
    assert _differ(want, _weights(pipe)) == []


def test_part_flags_are_checked(home, tiny_flux, tmp_path):
    from lorahub_cli.errors import Incompatible, NotFound, UsageError

    base = resolve_base(str(tiny_flux["transformer"]))
    with pytest.raises(UsageError, match="--text-encoder-3"):
        with_parts(base, parts={"text_encoder_3": tiny_flux["text_encoder"]})   # Flux has two text encoders
    with pytest.raises(NotFound):
        with_parts(base, parts={"vae": tmp_path / "nowhere.safetensors"})
    with pytest.raises(UsageError, match=r"^--vae is for a single-file"):   # a folder base has its own components
        with_parts(resolve_base(str(tiny_flux["folder"])), parts={"vae": tiny_flux["vae"]})
    swapped = with_parts(base, borrow=tiny_flux["configs"], parts={"vae": tiny_flux["text_encoder"],
                                                                   "text_encoder": tiny_flux["text_encoder"],
                                                                   "text_encoder_2": tiny_flux["text_encoder_2"]})
    with pytest.raises(Incompatible, match="--vae"):
        load_pipeline(swapped, device="cpu", dtype="fp32")


def test_a_flux_file_with_parts_draws_what_its_folder_draws(home, run_cli, tiny_flux, tmp_path):
    """The pipeline loaded from the BFL file and its parts (API) renders exactly the source folder's image (its
    own flow-matching scheduler, 2 steps). `lora generate` itself takes the same flags; without the parts it stops
    with missing-component before any weights are read."""
    from diffusers import FluxPipeline

    base = with_parts(resolve_base(str(tiny_flux["transformer"])), borrow=tiny_flux["configs"],
                      parts={c: tiny_flux[c] for c in ("vae", "text_encoder", "text_encoder_2")})
    pipe, _ = load_pipeline(base, device="cpu", dtype="fp32")
    source = FluxPipeline.from_pretrained(tiny_flux["folder"], local_files_only=True)

    def draw(p):   # latents, then the VAE's decode (the tiny VAE has no Flux shift factor for the pipeline's own)
        latents = p("low", num_inference_steps=2, height=32, width=32, guidance_scale=3.5, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images
        with torch.no_grad():
            return p.vae.decode(p._unpack_latents(latents, 32, 32, p.vae_scale_factor)).sample

    # every weight loads bit for bit; the pixels agree to float rounding only: on some CPUs a matmul's last bit
    # depends on where its weights lie in memory, and the BFL file and the folder lay them out differently
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        ours, theirs = getattr(pipe, component).state_dict(), getattr(source, component).state_dict()
        assert all(k in ours and torch.equal(ours[k], theirs[k]) for k in theirs), component
    image = draw(pipe)
    assert image.shape == (1, 3, 32, 32) and torch.allclose(image, draw(source), rtol=0, atol=1e-5)
    bare = run_cli("generate", "low", "--base", str(tiny_flux["transformer"]), "--borrow", str(tiny_flux["configs"]),
                   "--vae", str(tiny_flux["vae"]), "--steps", "2", "--size", "32x32", "--device", "cpu",
                   "-o", str(tmp_path / "none"), "--json")
    assert bare.returncode == 1 and bare.json()["error"]["code"] == "missing-component"
    error = bare.json()["error"]
    assert "text_encoder, text_encoder_2" in error["message"] and "vae" not in error["message"].split("(")[0]
    assert "--text-encoder-2" in error["hint"] and "--vae" not in error["hint"]


@pytest.fixture(scope="module")
def flux_adapter(tiny_flux, tmp_path_factory):
    from lorahub_cli.archs import module_table
    from tests.fixtures.adapters import FIXTURE_CACHE

    table = module_table(tiny_flux["folder"], "transformer", cache_dir=FIXTURE_CACHE)
    shapes = {f"transformer.{n}": (l.out_features, l.in_features) for n, l in table.items() if l.kind == "linear"}
    # norm_out.linear: BFL keeps its halves as (shift, scale), swapped against diffusers' (scale, shift)
    keys = [k for k in shapes if ".attn." in k or k.endswith(("proj_mlp", "proj_out", "norm_out.linear"))]
    return write_diffusers(random_adapter(shapes, keys, rank=4, alpha=8.0, seed=3),
                           tmp_path_factory.mktemp("flux-adapter") / "flux-style.safetensors")


@pytest.mark.parametrize("source", ["checkpoint", "folder"])
def test_fuse_single_file_flux_is_bit_for_bit(home, tiny_flux, flux_adapter, tmp_path, source):
    """`fuse --single-file`'s writer from the BFL file (rewritten tensor by tensor) and from the Flux folder (the
    merged pipeline in BFL's layout): loaded back, the transformer equals the pipeline fused by lora's engine at
    fp32. A Flux-family base is checked against the published Flux tables, which no test-sized adapter fits, so the
    adapter is checked here against the tiny base's own tables (family "unknown"); the writing is the real path."""
    import dataclasses

    from lorahub_cli.pipeline.fuse_file import fuse_to_single_file

    base = resolve_base(str(tiny_flux["transformer"] if source == "checkpoint" else tiny_flux["folder"]))
    assert base.family == "flux"
    own_tables = dataclasses.replace(base, family="unknown")
    out = tmp_path / "fused.safetensors"
    with Library() as lib:
        loaded = lib._load(lib._resolve([f"{flux_adapter}:0.7"]), own_tables)
        written = fuse_to_single_file(base, loaded, out, dtype="fp32", force=False)
        want = lib.pipeline(dataclasses.replace(resolve_base(str(tiny_flux["folder"])), family="unknown"),
                            [f"{flux_adapter}:0.7"], fuse=True, device="cpu", dtype="fp32")
    assert written.layers == 15 and written.warnings == []
    on_file = resolve_base(str(out))
    assert (on_file.family, on_file.holds) == ("flux", ("transformer",))   # BFL's layout, transformer alone
    add_base(str(out), name="fused", borrow=tiny_flux["folder"])
    got, _ = load_pipeline("fused", device="cpu", dtype="fp32")
    plain = _source(tiny_flux)
    fused, loaded_back = _weights(want, ("transformer",)), _weights(got, ("transformer",))
    assert [k for k in fused if not torch.equal(fused[k], plain[k])]   # the adapter changed weights
    assert _differ(fused, loaded_back) == []
