"""Names and tags: what could escape the store or break a terminal is refused, with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorahub_cli.errors import InvalidName
from registry.names import MAX_NAME, default_name, validate_name, validate_tag


@pytest.mark.parametrize("bad", ["", "   ", "../x", "a/b", "a\\b", "x\x1b[31m", "bell\x07", "cr\rx", "nul\x00",
                                 "rtl\u202eexe", ".", "..", " padded", "x" * (MAX_NAME + 1)])
def test_bad_names_are_refused(bad):
    with pytest.raises(InvalidName) as err:
        validate_name(bad)
    assert err.value.code == "invalid-name" and err.value.message


@pytest.mark.parametrize("good", ["pixel-art", "Pixel Art v2.1", "日本語スタイル", "x" * MAX_NAME, "a.b_c-d"])
def test_good_names_pass(good):
    assert validate_name(good) == good


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_accepted_name_is_safe_to_print_and_never_a_path(text):
    try:
        name = validate_name(text)
    except InvalidName:
        return
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    assert 0 < len(name) <= MAX_NAME


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_default_name_is_always_valid(stem):
    # any file name a user may have (with "/" removed: it cannot be in a file name)
    name = default_name(Path("/loras") / (stem.replace("/", "") + ".safetensors"))
    assert validate_name(name) == name


def test_default_name_uses_the_folder_for_generic_file_names():
    assert default_name(Path("/hub/ink-sketch/pytorch_lora_weights.safetensors")) == "ink-sketch"
    assert default_name(Path("/loras/pixel_art_v2.safetensors")) == "pixel_art_v2"
    assert default_name(Path("/loras/evil\x1b[2J.safetensors")) == "evil_[2J"


@pytest.mark.parametrize("bad", ["", "a,b", "x\x1b", "t" * 65])
def test_bad_tags_are_refused(bad):
    with pytest.raises(InvalidName) as err:
        validate_tag(bad)
    assert err.value.code == "invalid-tag"
