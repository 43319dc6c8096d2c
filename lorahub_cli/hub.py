"""Hub and URL sources: resolve, read the card, download, verify sha256 (see ``lorahub_cli.sources``).

This module is the stable import point named in ARCHITECTURE.md; the code lives in the ``sources`` package,
one small module per step. Nothing here imports huggingface_hub or torch at import time.
"""

from lorahub_cli.sources import *  # noqa: F401,F403
from lorahub_cli.sources import __all__  # noqa: F401
