"""Single-file checkpoints (A1111 / ComfyUI / Civitai layout) as bases and as outputs (engine; torch inside).

- original.py: a diffusers pipeline's state dicts -> the original LDM / OpenCLIP layout (``archs.ldm`` names)
- load.py: ``from_single_file`` with local configs only (the base's borrowed folder, else the shipped ones),
  never the network; a file that lacks a component gets ``missing-component``

``fuse --single-file`` (adapters merged in fp32 into the original tensors, cast once, published atomically) is
``pipeline.fuse_file``: it shares the merge arithmetic of ``pipeline.stack``, and pipeline imports this package,
never the other way.

Identification and module tables come from the header alone and live below (``inspect.checkpoint``,
``archs.single_file``), so `check` and `list` never import torch for a checkpoint base.
"""
