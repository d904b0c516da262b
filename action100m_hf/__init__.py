"""action100m-hf: use Action100M-format data, and build more of it.

`action100m_hf.data` serves the users of the data (the contract in `data.schema`, tree rules and
Markdown in `data.tree`, `load` for every config, segment frames); `action100m_hf.build` runs the
paper's pipeline; `resample` and `hub` write the resampled configs and publish. The names below are
the public API; the frame helpers are imported on first use (they need PyAV).
"""

from action100m_hf.data.loading import iter_tree_batches, iter_tree_rows, tree_files
from action100m_hf.data.schema import CONFIG_NAMES, DEFAULT_CONFIG, features_for, schema_for
from action100m_hf.data.tree import node_id, render_markdown, validate

__version__ = "0.2.0"

#: Public names that live in modules importing `datasets` or PyAV, loaded on first access.
_LAZY = {
    "load": "action100m_hf.data.builder",
    "with_frames": "action100m_hf.data.frame_dataset",
    "collate_frames": "action100m_hf.data.frame_dataset",
    "VideoDecoder": "action100m_hf.data.frames",
    "segment_frames": "action100m_hf.data.frames",
    "frames_at": "action100m_hf.data.frames",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'action100m_hf' has no attribute {name!r}")


__all__ = [
    "CONFIG_NAMES",
    "DEFAULT_CONFIG",
    "VideoDecoder",
    "collate_frames",
    "features_for",
    "frames_at",
    "iter_tree_batches",
    "iter_tree_rows",
    "load",
    "node_id",
    "render_markdown",
    "schema_for",
    "segment_frames",
    "tree_files",
    "validate",
    "with_frames",
]
