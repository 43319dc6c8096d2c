"""Embeddings in a pipeline: `lora generate -e NAME[:TOKEN]` and the Python API load them through diffusers'
load_textual_inversion; the recipe and A1111 text name them and `--from` makes the same image; SDXL files load
into both encoders; a pivotal-tuning LoRA loads its LoRA and its tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.embeddings.files import a1111_safetensors, diffusers_ti

PROMPT = "lower wider"


def _pixels(path):
    return np.asarray(Image.open(path))


def test_generate_with_an_embedding_records_and_remakes_it(tmp_path, ti_base, run_cli):
    run_cli("add", a1111_safetensors(tmp_path / "neg.safetensors", n=2))
    args = ["--base", ti_base, "--steps", "2", "--seed", "3", "--size", "32x32", "--device", "cpu", "--json"]
    plain = run_cli("generate", f"{PROMPT} neg", *args, "-o", tmp_path / "plain")
    used = run_cli("generate", f"{PROMPT} neg", *args, "-e", "neg", "-o", tmp_path / "used")
    assert plain.returncode == 0 and used.returncode == 0, used
    shot = used.json()[0]
    # the token changes the image: its vectors went into the text encoder
    assert not np.array_equal(_pixels(plain.json()[0]["path"]), _pixels(shot["path"]))
    recipe = run_cli("recipe", shot["path"], "--json").json()
    entry = run_cli("show", "neg", "--json").json()
    assert recipe["embeddings"] == [{"name": "neg", "sha256": entry["sha256"], "token": "neg"}]
    from lorahub_cli.pipeline.recipe import read_parameters

    assert read_parameters(shot["path"])["settings"]["TI hashes"] == f"neg: {entry['sha256'][:12]}"
    again = run_cli("generate", "--from", shot["path"], "--device", "cpu", "-o", tmp_path / "again", "--json")
    assert again.returncode == 0, again
    assert np.array_equal(_pixels(again.json()[0]["path"]), _pixels(shot["path"]))


def test_python_api_token_rename_collision_and_width(tmp_path, ti_base, tmp_home):
    from lorahub_cli.errors import Incompatible
    from lorahub_cli.ingest import ingest
    from lorahub_cli.pipeline import Library
    from registry.api import Registry

    with Registry(home=tmp_home) as reg:
        ingest(diffusers_ti(tmp_path / "learned_embeds.safetensors"), reg, name="cat")
        ingest(diffusers_ti(tmp_path / "sd2.safetensors", width=1024), reg, name="sd2-cat")
        ingest(a1111_safetensors(tmp_path / "wider.safetensors", n=1), reg, name="wider")
        ingest(a1111_safetensors(tmp_path / "newer.safetensors", n=1, seed=5), reg, name="newer")
    from safetensors.torch import load_file

    diffusers_vector = load_file(str(tmp_path / "learned_embeds.safetensors"))["<cat-toy>"]
    with Library(home=tmp_home) as lib:
        pipe = lib.pipeline(ti_base, embeddings=["cat:<my-cat>", "wider", "newer"], device="cpu")
        tok, te = pipe.tokenizer, pipe.text_encoder
        vector = te.get_input_embeddings().weight[tok.convert_tokens_to_ids("<my-cat>")]
        assert torch.equal(vector.detach(), diffusers_vector)
        # "wider" is a token of the tiny vocabulary (diffusers refuses those): loaded under another name, said
        # aloud; "newer" is a whole word ("newer</w>"): loaded as asked, with a new name suggested
        warnings = pipe.lorahub.warnings
        assert any("'wider' is already a token" in w and "'<wider>'" in w for w in warnings), warnings
        assert any("'newer' is a word" in w and "'<newer>'" in w for w in warnings), warnings
        assert {"<wider>", "newer"} <= set(tok.get_added_vocab())
        with pytest.raises(Incompatible) as err:
            lib.pipeline(ti_base, embeddings=["sd2-cat"], device="cpu")
        assert "1024" in err.value.message and "768" in err.value.message


def test_an_sdxl_file_loads_into_both_encoders(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lorahub_cli.embeddings.load import load_embeddings, resolve_embedding
    from lorahub_cli.errors import Incompatible
    from tests.embeddings.files import sdxl_ti
    from tests.fixtures.pipelines import _vae, make_tokenizer

    def clip(cls, width):
        return cls(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=width, intermediate_size=37,
                                  num_attention_heads=4, num_hidden_layers=1, pad_token_id=1, vocab_size=1000,
                                  projection_dim=32))

    pipe = StableDiffusionXLPipeline(vae=_vae(0), text_encoder=clip(CLIPTextModel, 768),
                                     text_encoder_2=clip(CLIPTextModelWithProjection, 1280),
                                     tokenizer=make_tokenizer(), tokenizer_2=make_tokenizer(), unet=None,
                                     scheduler=None)
    path = sdxl_ti(tmp_path / "xl_style.safetensors", n=2)
    warnings = load_embeddings(pipe, [resolve_embedding(str(path), None)])
    assert warnings == []
    saved = load_file(str(path))
    for key, tokenizer, encoder in (("clip_l", pipe.tokenizer, pipe.text_encoder),
                                    ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer.convert_tokens_to_ids(["xl_style", "xl_style_1"])   # two vectors: two tokens
        assert torch.equal(encoder.get_input_embeddings().weight[ids].detach(), saved[key])
    # an SD2 vector fits neither encoder
    with pytest.raises(Incompatible):
        load_embeddings(pipe, [resolve_embedding(str(diffusers_ti(tmp_path / "sd2.safetensors", width=1024)),
                                                 None)])


def test_a_pivotal_lora_loads_its_lora_and_its_tokens(tmp_path, ti_base, tmp_home):
    from safetensors.torch import load_file, save_file

    from lorahub_cli.ingest import ingest
    from lorahub_cli.pipeline import Library
    from registry.api import Registry
    from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

    shapes = layer_shapes(load_plain(ti_base))   # its CLIP layers are SD1's shapes (its tiny U-Net is not)
    lora = write_diffusers(random_adapter(shapes, [k for k in shapes if k.startswith("text_encoder.")], rank=2, alpha=None,
                                          seed=7), tmp_path / "piv.safetensors")
    tensors = load_file(str(lora))
    tensors["<s1>"] = torch.randn(768, generator=torch.Generator().manual_seed(8))
    save_file(tensors, str(lora), metadata={"format": "pt"})
    with Registry(home=tmp_home) as reg:
        ingest(lora, reg, name="piv")
    with Library(home=tmp_home) as lib:
        pipe = lib.pipeline(ti_base, ["piv"], device="cpu")
        assert pipe.lorahub.report.layers > 0   # the LoRA part
        row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<s1>")]
        assert torch.equal(row.detach(), tensors["<s1>"])   # and its token
        assert pipe.lorahub.embedding_recipe() == []         # recorded with the adapter, not as an embedding


def _pivotal_file(tmp_path, ti_base, name, seed, token="<s1>", vectors=1):
    """A cloneofsimo-style pivotal LoRA: random CLIP LoRA pairs with ``token``'s vectors inside."""
    from safetensors.torch import load_file, save_file

    from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

    shapes = layer_shapes(load_plain(ti_base))
    lora = write_diffusers(random_adapter(shapes, [k for k in shapes if k.startswith("text_encoder.")], rank=2,
                                          alpha=None, seed=seed), tmp_path / f"{name}.safetensors")
    tensors = load_file(str(lora))
    tensors[token] = torch.randn(vectors, 768, generator=torch.Generator().manual_seed(seed + 100))
    save_file(tensors, str(lora), metadata={"format": "pt"})
    return lora, tensors[token]


def _row(pipe, token):
    ids = pipe.tokenizer.convert_tokens_to_ids([token])
    return pipe.text_encoder.get_input_embeddings().weight[ids].detach()


def test_a_reused_pipeline_loads_unloads_and_switches_pivotal_tokens(tmp_path, ti_base, tmp_home):
    """The preview / grid / generate() path: the base is loaded once and adapter sets are switched on it; a
    pivotal LoRA's tokens come and go with it, and the reused pipeline makes the pixels a fresh one makes."""
    from lorahub_cli.ingest import ingest
    from lorahub_cli.pipeline import Library
    from registry.api import Registry

    one, one_rows = _pivotal_file(tmp_path, ti_base, "piv-a", 7, vectors=2)
    two, two_rows = _pivotal_file(tmp_path, ti_base, "piv-b", 9)
    with Registry(home=tmp_home) as reg:
        ingest(one, reg, name="piv-a")
        ingest(two, reg, name="piv-b")
        ingest(a1111_safetensors(tmp_path / "neg.safetensors", n=2), reg, name="neg")
    settings = dict(steps=2, seed=3, size=(32, 32), device="cpu")
    with Library(home=tmp_home) as lib:
        pipe = lib.pipeline(ti_base, {}, device="cpu", embeddings=["neg"])
        base_vocab = len(pipe.tokenizer)
        rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
        assert pipe.tokenizer.convert_tokens_to_ids("<s1>") == pipe.tokenizer.unk_token_id

        lib.set_adapters(pipe, ["piv-a"])
        assert torch.equal(_row(pipe, "<s1>"), one_rows[:1]) and torch.equal(_row(pipe, "<s1>_1"), one_rows[1:])
        reused = np.asarray(lib.generate(f"{PROMPT} <s1> neg", pipe=pipe, **settings)[0].image)

        lib.set_adapters(pipe, ["piv-b"])   # the same token name, other vectors: replaced, not refused
        assert torch.equal(_row(pipe, "<s1>"), two_rows)
        assert pipe.tokenizer.convert_tokens_to_ids("<s1>_1") == pipe.tokenizer.unk_token_id
        assert {"<s1>", "neg", "neg_1"} <= set(pipe.tokenizer.get_added_vocab())   # the asked-for one stays

        lib.set_adapters(pipe, {})          # no pivotal adapter: back to the vocabulary of the first build
        assert len(pipe.tokenizer) == base_vocab
        assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == rows
        assert pipe.tokenizer.convert_tokens_to_ids("<s1>") == pipe.tokenizer.unk_token_id
        assert pipe.lorahub.embedding_recipe() == [e for e in pipe.lorahub.embedding_recipe() if e["name"] == "neg"]
    with Library(home=tmp_home) as lib:
        fresh = lib.pipeline(ti_base, ["piv-a"], device="cpu", embeddings=["neg"])
        made = np.asarray(lib.generate(f"{PROMPT} <s1> neg", pipe=fresh, **settings)[0].image)
    assert np.array_equal(reused, made)


def test_preview_of_a_pivotal_lora_uses_its_tokens(tmp_path, ti_base, run_cli):
    """`lora preview` loads the base once and switches adapters: its image must be the one a fresh pipeline
    makes from the recipe (without the tokens the prompt's "<s1>" would be unknown text)."""
    one, _ = _pivotal_file(tmp_path, ti_base, "piv-a", 7)
    assert run_cli("add", one, "--name", "piv-a").returncode == 0
    args = ["--base", ti_base, "--steps", "2", "--size", "32", "--device", "cpu", "--json"]
    shot = run_cli("preview", "piv-a", *args, "--prompt", "<s1> lower")
    assert shot.returncode == 0, shot
    made = shot.json()
    path = (made["previews"] if isinstance(made, dict) else made)[0]["path"]
    again = run_cli("generate", "--from", path, "--device", "cpu", "-o", tmp_path / "again", "--json")
    assert again.returncode == 0, again
    assert np.array_equal(_pixels(again.json()[0]["path"]), _pixels(path))
