"""The embedded sample: the generated videos `action100m build` annotates when given no input."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def sample_folder(output: str) -> Path:
    """Where the sample's videos go: in the output's work folder when it is local."""
    if "://" in output and not output.startswith("file://"):
        return Path(tempfile.gettempdir()) / "action100m-sample"
    return Path(output.removeprefix("file://")) / "_work" / "sample"


def ensure_sample_videos(folder: str | os.PathLike, seed: int) -> Path:
    """The sample's videos (`synthetic.make_sample_videos`) in `folder`, made once.

    They are written to a temporary sibling and renamed into place, so an interrupted run never
    leaves half a sample and concurrent ranks do not clash.
    """
    from action100m_hf.data.synthetic import make_sample_videos

    target = Path(folder)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make_sample_videos(tmp, seed=seed)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
