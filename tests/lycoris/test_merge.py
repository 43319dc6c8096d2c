"""`lora merge` takes LyCORIS inputs through the same exact pairs: stacking a LoHa with a LoKr is exact."""

from __future__ import annotations

import torch

from lorahub_cli.convert.load import read_source, to_canonical
from lorahub_cli.merge.job import merge_files
from tests.lycoris.forms import reference, write_file


def test_stack_of_loha_and_lokr_is_the_weighted_sum(tmp_path):
    loha = write_file(tmp_path / "loha.safetensors", "loha", rank=2, seed=21)
    lokr = write_file(tmp_path / "lokr.safetensors", "lokr", rank=2, seed=22)
    out = tmp_path / "merged.safetensors"
    merge_files([f"{tmp_path / 'loha.safetensors'}:0.5", f"{tmp_path / 'lokr.safetensors'}:-1"], str(out),
                method="stack", dtype="fp32")
    merged = to_canonical(read_source(out))[0]
    for key in loha:
        want = 0.5 * reference(*loha[key]) - reference(*lokr[key])
        got = merged.modules[key].delta(torch.float64).reshape(want.shape)
        assert float((got - want).norm() / want.norm()) < 1e-6, key
