"""action100m-hf: load, decode, build and publish Action100M-format datasets.

The format is defined in `schema` (Arrow schemas of every config) and `tree` (node ids, tree rules,
Markdown); `loading.load` gives every config over any source of tree shards.
"""

from .loading import load, iter_tree_batches, iter_tree_rows, tree_files
from .schema import CONFIG_NAMES, DEFAULT_CONFIG, features_for, schema_for
from .tree import node_id, render_markdown, validate

__version__ = "0.1.0"

__all__ = [
    "CONFIG_NAMES",
    "DEFAULT_CONFIG",
    "features_for",
    "iter_tree_batches",
    "iter_tree_rows",
    "load",
    "node_id",
    "render_markdown",
    "schema_for",
    "tree_files",
    "validate",
]
