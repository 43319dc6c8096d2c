"""Quiet the libraries' own chatter (load progress bars, info warnings) for command-line runs; the run's
progress is ours to show. Library users keep their own logging settings: only the command and the
relaunched workers call this."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import logging

    logging.getLogger("accelerate").setLevel(logging.ERROR)
