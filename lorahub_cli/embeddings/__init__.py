"""Textual-inversion embeddings as library entries (``kind: embedding``): what goes into the store
(``store``: a pickled embedding as a verified safetensors file), whether one fits a base (``fit``: by the
widths of its text encoders) and loading into a pipeline (``load``: diffusers' ``load_textual_inversion``,
on both SDXL encoders). What a file is comes from ``lorahub_cli.inspect.embedding``.
"""
