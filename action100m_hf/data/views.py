"""Flat configs: one row per segment, derived from tree rows with pyarrow compute kernels.

`flat_table(tree_batch, config)` turns a batch of `tree` rows (one per video) into the rows of
`brief_action`, `detailed_action`, `brief_caption`, `detailed_caption` or `segments`, with the
exact schema of `schema.schema_for(config)`. No Python loop runs per segment: the node lists are
flattened once and every column is a struct-field extraction.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from action100m_hf.data.schema import (
    ACTION_CONFIGS,
    ANNOTATION_CONFIGS,
    FLAT_CONFIGS,
    FLAT_TEXT_FIELDS,
    NA_TEXT,
    SEGMENT_KEY_FIELDS,
    schema_for,
)
from action100m_hf.errors import UnknownConfigError


def _field(struct_array: pa.Array, path: tuple[str, ...]) -> pa.Array:
    out = struct_array
    for name in path:
        out = pc.struct_field(out, name)
    return out


def node_paths(config: str) -> list[tuple[str, ...]]:
    """The node fields (as struct paths) a flat config reads: enough to project Parquet columns."""
    keys = [(name,) for name, _ in SEGMENT_KEY_FIELDS if name not in ("video_uid", "duration")]
    return keys + [path for _, path in FLAT_TEXT_FIELDS[config]]


def flat_table(tree: pa.Table | pa.RecordBatch, config: str) -> pa.Table:
    """The rows of flat `config` for every node of every video in `tree`.

    `tree` needs `video_uid` and `nodes`; the node structs may hold only `node_paths(config)`.
    """
    if config not in FLAT_CONFIGS:
        raise UnknownConfigError(
            f"{config!r} is not a flat config; the flat configs are: {', '.join(FLAT_CONFIGS)}"
        )
    schema = schema_for(config)
    nodes_col = tree.column("nodes")
    if isinstance(nodes_col, pa.ChunkedArray):
        nodes_col = nodes_col.combine_chunks()
    uids = tree.column("video_uid")
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    nodes = pc.list_flatten(nodes_col)
    if len(nodes) == 0:
        return schema.empty_table()
    owner = pc.list_parent_indices(nodes_col)
    start = pc.struct_field(nodes, "start")
    end = pc.struct_field(nodes, "end")
    columns = {
        "video_uid": pc.take(uids, owner),
        "node_id": pc.struct_field(nodes, "node_id"),
        "parent_id": pc.struct_field(nodes, "parent_id"),
        "level": pc.struct_field(nodes, "level"),
        "start": start,
        "end": end,
        "duration": pc.subtract(end, start),
    }
    for name, path in FLAT_TEXT_FIELDS[config]:
        columns[name] = _field(nodes, path)
    table = pa.Table.from_pydict(columns).cast(schema)
    if config in ANNOTATION_CONFIGS:
        keep = pc.is_valid(table.column("text"))
        if config in ACTION_CONFIGS:
            keep = pc.and_(keep, pc.not_equal(table.column("text"), NA_TEXT))
        table = table.filter(keep)
    return table
