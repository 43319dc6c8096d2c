"""The file-name sanitiser and the layout template (no library needed)."""

from __future__ import annotations

import pytest

from lorahub_cli.errors import BadLayout
from lorahub_cli.export.names import (MAX_COMPONENT_BYTES, LONGEST_SUFFIX, check_layout, layout_values,
                                      render_layout, sanitize)


@pytest.mark.parametrize("raw, safe", [
    ("style", "style"),
    ("a:b*c?d", "a_b_c_d"),            # Windows refuses : * ?
    ('x<y>"z|w', "x_y__z_w"),
    ("..", "__"),                      # never a parent folder
    ("../../etc/passwd", "___.._etc_passwd"),
    ("/abs", "_abs"),
    ("back\\slash", "back_slash"),
    (".hidden", "_hidden"),
    ("trailing. ", "trailing"),        # Windows drops trailing dots and spaces
    ("CON", "_CON"), ("nul.txt", "_nul.txt"), ("com1", "_com1"), ("LPT9", "_LPT9"),
    ("bell\x07\u202eevil", "bell__evil"),
    ("", "_"),
])
def test_sanitize(raw, safe):
    assert sanitize(raw) == safe


def test_sanitize_makes_unicode_nfc():
    assert sanitize("cafe\u0301") == "caf\u00e9"   # macOS would hand NFD back


def test_long_names_fit_with_every_sidecar_and_stay_distinct():
    a = sanitize("字" * 128, tail="aaaaaaaa")
    b = sanitize("字" * 127 + "x", tail="bbbbbbbb")
    assert len((a + LONGEST_SUFFIX).encode()) <= MAX_COMPONENT_BYTES
    assert a != b and a.endswith("~aaaaaaaa")
    assert "\ufffd" not in a   # never a character cut in half


@pytest.mark.parametrize("layout", ["", "/abs/{name}", "C:/x/{name}", "{family}/../{name}", "{family}//{name}",
                                    "{nope}/{name}", "{name!r}", "{name.__class__}", "{name:>10}", "{family}",
                                    "{name}/{"])
def test_bad_layouts_are_refused(layout):
    with pytest.raises(BadLayout) as err:
        check_layout(layout)
    assert err.value.code == "bad-layout" and err.value.exit_code == 2


def test_a_value_never_adds_a_folder_or_climbs():
    parts = check_layout("{tag}/{family}/{name}")
    values = layout_values(name="../../x", sha256="ab" * 32, family="sdxl", format="kohya", network="lora",
                           tags=["a/b"])
    assert render_layout(parts, values) == ("a_b", "sdxl", "___.._x")


def test_label_falls_back_to_the_family():
    values = layout_values(name="n", sha256="0" * 64, family="sdxl", format="kohya", network="lora", tags=[])
    assert values["label"] == "SDXL 1.0" and values["tag"] == "untagged"
