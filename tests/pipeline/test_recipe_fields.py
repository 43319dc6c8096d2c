"""A crafted recipe is checked field by field exactly as the command line checks its options (issue 13 C6):
`generate --from` refuses it with `bad-recipe` before anything loads or is written; the same value typed as an
option is a usage error. One set of checks (``lorahub_cli.values``) serves both."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from lorahub_cli.errors import BadRecipe, UsageError
from lorahub_cli.pipeline.recipe import Recipe

GOOD = {"prompt": "a cat", "negative_prompt": "", "seed": 1, "steps": 2, "guidance": 7.5, "scheduler": "dpm",
        "width": 64, "height": 64, "base": "sd15", "base_id": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "adapters": [{"name": "style", "sha256": "ab" * 32, "weight": 0.8}], "stack": "merge", "fused": False,
        "device": "cpu", "dtype": "fp32", "versions": {"lorahub-cli": "0.1.0"}, "version": 1}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_recipe_png(path: Path, data: dict) -> Path:
    """A 1x1 PNG whose lorahub iTXt chunk is ``data`` as JSON (any values: the point is crafted ones)."""
    text = json.dumps(data).encode()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                     + _chunk(b"iTXt", b"lorahub\0\0\0\0\0" + text)
                     + _chunk(b"IDAT", zlib.compress(b"\0\0")) + _chunk(b"IEND", b""))
    return path


def _adapter(**changes) -> list[dict]:
    return [{**GOOD["adapters"][0], **changes}]


CRAFTED = [
    ("seed", "notanint"), ("seed", -1), ("seed", 2**64), ("seed", 1.5), ("seed", True),
    ("steps", 1e12), ("steps", 1e308), ("steps", 10**12), ("steps", 0), ("steps", "25"),
    ("guidance", "high"), ("width", 100_000), ("height", 100_000), ("width", 0), ("width", 64.0),
    ("scheduler", "warp"), ("scheduler", 3), ("prompt", ["a", "list"]), ("base", ""), ("stack", "mystery"),
    ("dtype", "fp8"), ("fused", "yes"), ("versions", {"x": 1}),
    ("adapters", _adapter(weight="heavy")), ("adapters", _adapter(weight=None)), ("adapters", _adapter(weight=True)),
    ("adapters", _adapter(sha256="zz")), ("adapters", _adapter(name=7)), ("adapters", _adapter(path=3)),
]


@pytest.mark.parametrize("field, value", CRAFTED, ids=[f"{f}={v!r}"[:40] for f, v in CRAFTED])
def test_every_crafted_field_is_a_bad_recipe(field, value):
    with pytest.raises(BadRecipe, match=f"recipe's {field}"):
        Recipe.from_dict({**GOOD, field: value})


def test_a_good_recipe_reads_and_integral_floats_stay_numbers():
    recipe = Recipe.from_dict({**GOOD, "guidance": 7})
    assert recipe.guidance == 7.0 and isinstance(recipe.guidance, float)
    assert recipe.adapters == GOOD["adapters"]


def test_a_recipe_built_in_python_is_checked_before_a_rerun(tmp_path):
    from lorahub_cli.pipeline import Library

    with Library(home=tmp_path / "home") as lib, pytest.raises(BadRecipe, match="steps"):
        lib.rerun_job(Recipe(**{**GOOD, "steps": 10**12}))


@pytest.mark.parametrize("field, value", [("seed", "notanint"), ("steps", 1e12), ("steps", 1e308),
                                          ("adapters", _adapter(weight="heavy")), ("width", 100_000)])
def test_generate_from_a_crafted_recipe_is_bad_recipe_and_writes_nothing(run_cli, tmp_home, tmp_path, field, value):
    image = write_recipe_png(tmp_path / "crafted.png", {**GOOD, field: value})
    res = run_cli("generate", "--from", image, "-o", tmp_path / "out", "--json", env={"HF_HUB_OFFLINE": "1"})
    text = res.stdout + res.stderr
    assert res.returncode == 1 and '"bad-recipe"' in text, res
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [
    (["--steps", "1000000000000"], "--steps must be a whole number from 1 to 1000"),
    (["--steps", "0"], "--steps must be"),
    (["--seed", "-1"], "--seed must be a whole number"),
    (["--seed", str(2**64)], "--seed must be"),
    (["--size", "100000x100000"], "--size width must be"),
])
def test_the_same_values_as_options_are_usage_errors(run_cli, tmp_home, tmp_path, args, needle):
    res = run_cli("generate", "a cat", "--base", tmp_path / "no-base", "-o", tmp_path / "out", *args)
    assert res.returncode == 2 and needle in res.stdout + res.stderr, res
    assert not (tmp_path / "out").exists()


def test_the_python_api_uses_the_same_checks():
    from lorahub_cli.values import check_seed, check_steps, parse_size

    with pytest.raises(UsageError, match="--steps"):
        check_steps(1e12)
    with pytest.raises(UsageError, match="--seed"):
        check_seed("notanint")
    with pytest.raises(UsageError, match="width"):
        parse_size("100000x100000")
    with pytest.raises(UsageError, match="WIDTHxHEIGHT"):
        parse_size("9" * 5000)
