"""Base-model architectures from public configs: real layer names and shapes, with no weights.

- aliases.py: sd15, sd21, sdxl, sd3, flux -> their Hub repo, family and packaged configs
- tables.py: module_table(base, component) -> {name: Layer}, cached as JSON (warm calls skip torch)
- build.py: the meta-device build behind a cache miss (the only module here that imports torch)
- naming.py: kohya / SAI-LDM spellings of table names
- fused.py: BFL Flux and SAI SD3 fused layers (qkv, linear1, ...) and their diffusers parts
- positional.py: cloneofsimo's position order

Nothing imported here pulls in torch, diffusers or transformers.
"""

from lorahub_cli.archs.aliases import REPOS, aliases, config_dir, family_of, resolve_alias
from lorahub_cli.archs.tables import Layer, base_components, base_dir, component_class, module_table

__all__ = [
    "REPOS", "Layer", "aliases", "base_components", "base_dir", "component_class", "config_dir",
    "family_of", "module_table", "resolve_alias",
]
