"""Files written whole or not at all: the one way every module replaces a small file (a card,
a summary, a settings or statistics file) so that a kill or a full disk never leaves it truncated."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8, newlines as given) beside `path` and rename it into place;
    on any failure no temporary file is left and the error propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
