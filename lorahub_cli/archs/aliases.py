"""Short names for the base models whose public configs ship with lorahub (no torch here).

An alias names one Hub repository whose diffusers-layout configs live in ``configs/<alias>/``.
The family vocabulary (sd1, sd2, ...) is the one in ARCHITECTURE.md; each family maps to the alias
that stands for it when only a family is known (an adapter says "sd1", a check needs a real base).
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"

# alias -> the Hub repository its configs were copied from
REPOS: dict[str, str] = {
    "sd15": "runwayml/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "flux": "black-forest-labs/FLUX.1-dev",
}

FAMILY_OF_ALIAS: dict[str, str] = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
ALIAS_OF_FAMILY: dict[str, str] = {family: alias for alias, family in FAMILY_OF_ALIAS.items()}

# Other spellings people and metadata use for the same bases (lower-case; repo moves included).
_EXTRA_NAMES: dict[str, str] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "sd1.5": "sd15",
    "sd2.1": "sd21",
    "flux1": "flux",
    "flux.1-dev": "flux",
}


def aliases() -> list[str]:
    """Every alias, in the order they were added."""
    return list(REPOS)


def resolve_alias(name: str) -> str | None:
    """The alias for an alias, family name or known repo id (case-insensitive); None if unknown."""
    key = name.strip().lower()
    if key in REPOS:
        return key
    if key in ALIAS_OF_FAMILY:
        return ALIAS_OF_FAMILY[key]
    for alias, repo in REPOS.items():
        if key == repo.lower():
            return alias
    return _EXTRA_NAMES.get(key)


def family_of(name: str) -> str:
    """The family (sd1, sd2, sdxl, sd3, flux) of an alias, family or repo id; "unknown" otherwise."""
    alias = resolve_alias(name)
    return FAMILY_OF_ALIAS[alias] if alias else "unknown"


def config_dir(alias: str) -> Path:
    """The packaged diffusers-layout folder of an alias (model_index.json + <component>/config.json)."""
    return CONFIGS / alias
