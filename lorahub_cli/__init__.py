"""lorahub-cli: a library and command line for LoRA adapters of Stable Diffusion-family models."""

__version__ = "0.1.0"
