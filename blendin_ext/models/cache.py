"""The on-disk cache: ``$BLENDIN_CACHE`` (default ``~/.cache/blendin_ext``).

models/<name>/        converted GGUF models (see loading.py)
vocab_maps/<key>.pt   guide->base token maps (see blendin_ext.guides.vocab_map)
"""

from __future__ import annotations

import os
from pathlib import Path

# Written last into a converted folder: its presence means the folder is complete.
CONVERTED_MARKER = "blendin_source.json"


def cache_dir() -> Path:
    """Root of the on-disk cache (``$BLENDIN_CACHE`` or ``~/.cache/blendin_ext``)."""
    root = os.environ.get("BLENDIN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "blendin_ext"


def models_dir() -> Path:
    return cache_dir() / "models"


def is_converted(folder: Path) -> bool:
    return (folder / CONVERTED_MARKER).is_file()
