"""Loading: every config over any source of shards, streaming or not, reading only what a config needs.

A source is a local Parquet file, a folder (a Hub-layout folder with a `tree/` directory, or any
folder of tree shards), a glob, an `hf://`, `http(s)://` or other fsspec URL, or a list of those
(`sources.parquet_files`). The readers here give tree and flat-config batches reading only the Parquet
leaf columns a config needs, row group by row group (flat rows derived with `views.flat_table`);
invalid trees are refused (or skipped) with `tree.validate`'s report. `load(config, source)`, in
`data.builder`, is the `datasets` builder over these readers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.data import sources
from action100m_hf.data.schema import FLAT_CONFIGS, TREE_SCHEMA, schema_for
from action100m_hf.data.tree import SkippedInvalidTrees, summary
from action100m_hf.errors import ShardReadError, TreeValidationError

#: What a reader does with a tree row that breaks a rule: yield it, raise, or leave it out.
ON_INVALID = ("keep", "raise", "skip")


def tree_files(source, storage_options: dict | None = None) -> list[str]:
    """The tree shard files a source names, sorted; `ShardReadError` when it names none."""
    return sources.parquet_files(source, "tree", storage_options)


def config_files(source, config: str, storage_options: dict | None = None) -> list[str]:
    """The shards `config` reads: tree shards, or the stored shards of a resampled config."""
    if config == "tree" or config in FLAT_CONFIGS:
        return tree_files(source, storage_options)
    return sources.parquet_files(source, config, storage_options)


def check_tree_shard(path: str, schema: pa.Schema) -> None:
    """Raise `ShardReadError` when the shard's columns cannot be read as the `tree` contract."""
    missing = [name for name in TREE_SCHEMA.names if name not in schema.names]
    if missing:
        raise ShardReadError(
            f"tree shard {path}: missing column(s) {', '.join(missing)}; a tree shard has "
            f"{', '.join(TREE_SCHEMA.names)}"
        )
    nodes = schema.field("nodes").type
    if not (pa.types.is_list(nodes) or pa.types.is_large_list(nodes)) or not pa.types.is_struct(nodes.value_type):
        raise ShardReadError(f"tree shard {path}: column nodes is {nodes}, not a list of node structs")


def node_columns(path: str, shard: pq.ParquetFile, node_paths) -> list[str]:
    """Parquet leaf columns of `video_uid` and the wanted node fields, whatever the list naming."""
    leaves = sources.leaf_paths(shard)
    wanted = ["video_uid"]
    for node_path in node_paths:
        match = [
            leaf for leaf in leaves
            if leaf.startswith("nodes.")
            and leaf.split(".")[-len(node_path):] == list(node_path)
            and len(leaf.split(".")) - len(node_path) in (2, 3)
        ]
        if not match:
            raise ShardReadError(f"tree shard {path}: no column for nodes.{'.'.join(node_path)}")
        wanted.extend(match)
    return wanted


def checked(batch, path: str, on_invalid: str):
    """`batch` without its invalid rows ("skip", with a `SkippedInvalidTrees` warning), or a
    `TreeValidationError` naming the shard, videos, nodes and rules ("raise")."""
    from action100m_hf.data.tree_batch import invalid_rows

    if on_invalid == "keep":
        return batch
    bad = invalid_rows(batch)
    if not bad:
        return batch
    violations = [v for row in bad.values() for v in row]
    if on_invalid == "raise":
        raise TreeValidationError(
            f"tree shard {path}: {len(bad)} video(s) break the tree rules (skip_invalid=True or "
            f"--skip-invalid keeps the valid ones): {summary(violations)}",
            violations,
        )
    firsts = [row[0] for row in bad.values()]
    message = f"tree shard {path}: skipped {len(bad)} invalid video(s): {summary(firsts, 20)}"
    warnings.warn(SkippedInvalidTrees(message, violations), stacklevel=2)
    keep = [i not in bad for i in range(batch.num_rows)]
    return batch.filter(pa.array(keep))


def read_tree_shard(
    path: str,
    config: str = "tree",
    *,
    batch_size: int = 64,
    columns: Sequence[str] | None = None,
    row_groups: Sequence[int] | None = None,
    on_invalid: str = "keep",
    storage_options: dict | None = None,
) -> Iterator[pa.RecordBatch | pa.Table]:
    """Batches of one tree shard: tree rows cast to the contract (`columns` of it), or the rows of
    flat `config` read from the node columns it needs only. Every failure names the shard."""
    from action100m_hf.data.views import flat_table, node_paths

    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {', '.join(ON_INVALID)}, got {on_invalid!r}")
    shard = sources.open_parquet(path, storage_options, "tree shard")
    check_tree_shard(path, shard.schema_arrow)
    if config == "tree":
        names = list(columns) if columns else TREE_SCHEMA.names
        target = pa.schema([TREE_SCHEMA.field(n) for n in names])
        read, convert = names, lambda b: b.select(names).cast(target)
    else:
        read, convert = node_columns(path, shard, node_paths(config)), lambda b: flat_table(b, config)
    with shard:
        for batch in sources.read_batches(path, shard, read, batch_size, row_groups, "tree shard"):
            try:
                out = convert(checked(batch, path, on_invalid))
            except sources.READ_ERRORS as e:
                cause = sources.cause_text(e)
                raise ShardReadError(f"tree shard {path}: cannot read as the tree contract ({cause})") from e
            yield out


def read_stored_shard(
    path: str, config: str, *, batch_size: int = 1024, row_groups: Sequence[int] | None = None,
    storage_options: dict | None = None,
) -> Iterator[pa.Table]:  # fmt: skip
    """Tables of a stored config's shard (a resampled config), cast to its schema."""
    schema = schema_for(config)
    shard = sources.open_parquet(path, storage_options, f"{config} shard")
    missing = [n for n in schema.names if n not in shard.schema_arrow.names]
    if missing:
        raise ShardReadError(f"{config} shard {path}: missing column(s) {', '.join(missing)}")
    with shard:
        for batch in sources.read_batches(path, shard, schema.names, batch_size, row_groups, f"{config} shard"):
            try:
                table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
            except sources.READ_ERRORS as e:
                raise ShardReadError(f"{config} shard {path}: cannot read as {config} ({sources.cause_text(e)})") from e
            yield table


def iter_tree_batches(
    source, batch_size: int = 64, columns: Sequence[str] | None = None, *, on_invalid: str = "keep"
) -> Iterator[pa.RecordBatch]:
    """Record batches of tree rows cast to `schema.TREE_SCHEMA` (or its `columns`), file by file.

    `on_invalid`: "keep" yields every row, "raise" refuses a batch with an invalid tree (which needs
    `video_uid` and `nodes` among `columns`), "skip" leaves invalid rows out with a warning.
    """
    for path in tree_files(source):
        yield from read_tree_shard(path, batch_size=batch_size, columns=columns, on_invalid=on_invalid)


def iter_flat_batches(source, config: str, batch_size: int = 256, *, skip_invalid: bool = False) -> Iterator[pa.Table]:
    """Rows of flat `config`, reading only the Parquet columns it needs; invalid trees refused or skipped."""
    schema_for(config)
    for path in tree_files(source):
        yield from read_tree_shard(path, config, batch_size=batch_size, on_invalid="skip" if skip_invalid else "raise")


def iter_tree_rows(source) -> Iterator[dict]:
    """Tree rows as Python dicts (`video_uid`, `metadata`, `nodes`)."""
    for batch in iter_tree_batches(source):
        yield from batch.to_pylist()
