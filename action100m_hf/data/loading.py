"""Loading: every config over any source of tree shards, streaming or not.

A source is a local Parquet file, a folder (a Hub-layout folder with a `tree/` directory, or any
folder of tree shards), a glob, an `hf://` path such as `schema.OFFICIAL_SOURCE`, or a list of
those. `load(config, source)` reads the tree shards with `datasets`' Parquet builder and derives
flat configs on the fly with `views.flat_table` (Arrow-formatted batched map: no per-row Python).
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.errors import ShardReadError
from action100m_hf.data.schema import FLAT_CONFIGS, SPLIT, TREE_SCHEMA, features_for, schema_for

_HAS_GLOB = ("*", "?", "[")


def _fs_and_path(path: str):
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs, paths


def tree_files(source: str | os.PathLike | Sequence) -> list[str]:
    """The tree shard files a source names, sorted; `ShardReadError` when it names none."""
    if isinstance(source, (list, tuple)):
        return [f for item in source for f in tree_files(item)]
    src = str(source)
    if "://" in src:
        fs, _ = _fs_and_path(src)
        protocol = src.split("://", 1)[0]
        pattern = src if any(c in src for c in _HAS_GLOB) or src.endswith(".parquet") else src.rstrip("/") + "/*.parquet"
        found = sorted(fs.glob(pattern.split("://", 1)[1]))
        files = [f"{protocol}://{f}" for f in found]
    elif any(c in src for c in _HAS_GLOB):
        files = sorted(globlib.glob(src, recursive=True))
    elif os.path.isdir(src):
        root = Path(src)
        base = root / "tree" if (root / "tree").is_dir() else root
        files = sorted(str(p) for p in base.rglob("*.parquet") if "_work" not in p.parts)
    elif os.path.isfile(src):
        files = [src]
    else:
        raise ShardReadError(f"tree source {src}: no such file or folder")
    if not files:
        raise ShardReadError(f"tree source {src}: no Parquet files found")
    return files


def _open_shard(path: str) -> pq.ParquetFile:
    try:
        if "://" in path:
            fs, paths = _fs_and_path(path)
            handle = fs.open(paths[0], "rb")
            return pq.ParquetFile(handle)
        return pq.ParquetFile(path)
    except FileNotFoundError as e:
        raise ShardReadError(f"tree shard {path}: file not found") from e
    except (pa.ArrowInvalid, OSError) as e:
        raise ShardReadError(f"tree shard {path}: not a readable Parquet file ({e})") from e


def check_tree_shard(path: str, schema: pa.Schema) -> None:
    """Raise `ShardReadError` when the shard's columns cannot be read as the `tree` contract."""
    missing = [name for name in TREE_SCHEMA.names if name not in schema.names]
    if missing:
        raise ShardReadError(
            f"tree shard {path}: missing column(s) {', '.join(missing)}; a tree shard has "
            f"{', '.join(TREE_SCHEMA.names)}"
        )


def _shard_batches(source, batch_size: int, columns_of, convert) -> Iterator:
    """`convert(batch)` for the record batches of every shard of `source`, reading the columns
    `columns_of(path, shard)` names; any failure is a `ShardReadError` naming the shard."""
    for path in tree_files(source):
        shard = _open_shard(path)
        check_tree_shard(path, shard.schema_arrow)
        columns = columns_of(path, shard)
        try:
            for batch in shard.iter_batches(batch_size=batch_size, columns=columns):
                yield convert(batch)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise ShardReadError(f"tree shard {path}: cannot read as the tree contract ({e})") from e


def iter_tree_batches(
    source, batch_size: int = 64, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of tree rows cast to `schema.TREE_SCHEMA` (or its `columns`), file by file."""
    names = list(columns) if columns else TREE_SCHEMA.names
    target = pa.schema([TREE_SCHEMA.field(n) for n in names])
    return _shard_batches(source, batch_size, lambda path, shard: names, lambda b: b.cast(target))


def _projected_columns(path: str, shard: pq.ParquetFile, node_paths) -> list[str]:
    """Parquet leaf columns of `video_uid` and the wanted node fields, whatever the list naming."""
    leaves = [shard.schema.column(i).path for i in range(len(shard.schema))]
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


def iter_flat_batches(source, config: str, batch_size: int = 256) -> Iterator[pa.Table]:
    """Rows of flat `config`, reading only the Parquet columns it needs (projection pushdown)."""
    from action100m_hf.data.views import flat_table, node_paths

    paths = node_paths(config)
    return _shard_batches(
        source,
        batch_size,
        lambda path, shard: _projected_columns(path, shard, paths),
        lambda batch: flat_table(batch, config),
    )


def iter_tree_rows(source) -> Iterator[dict]:
    """Tree rows as Python dicts (`video_uid`, `metadata`, `nodes`)."""
    for batch in iter_tree_batches(source):
        yield from batch.to_pylist()


def _flatten_batch(config: str):
    from action100m_hf.data.views import flat_table

    def fn(batch: pa.Table) -> pa.Table:
        return flat_table(batch, config)

    return fn


def load(config: str = "brief_action", source=None, *, streaming: bool = False, split: str = SPLIT, **kwargs):
    """Any config of the dataset over `source` (default: the official preview on the Hub).

    Returns a `datasets.Dataset` (or `IterableDataset` when `streaming`) whose features equal
    `schema.features_for(config)` exactly. Extra keyword arguments go to `datasets.load_dataset`.
    """
    import datasets

    from action100m_hf.data.schema import OFFICIAL_SOURCE

    schema_for(config)  # unknown names fail here, with the list of configs
    source = OFFICIAL_SOURCE if source is None else source
    if config not in FLAT_CONFIGS and config != "tree":
        return _load_stored(config, source, streaming=streaming, split=split, **kwargs)
    files = tree_files(source)
    # Local shards are checked up front (one footer read each); of remote ones only the first,
    # since each check is a request (the official preview has many shards).
    for path in [f for f in files if "://" not in f] or files[:1]:
        check_tree_shard(path, _open_shard(path).schema_arrow)
    tree = datasets.load_dataset(
        "parquet",
        data_files={split: files},
        split=split,
        streaming=streaming,
        features=features_for("tree"),
        **kwargs,
    )
    if config == "tree":
        return tree
    features = features_for(config)
    # An Arrow table returned by the function replaces the batch (no merge with the tree columns).
    flat = tree.with_format("arrow").map(
        _flatten_batch(config),
        batched=True,
        batch_size=64,
        features=features,
    )
    return flat.with_format(None)


def _load_stored(config: str, source, *, streaming: bool, split: str, **kwargs):
    """Configs that cannot be derived from trees (the resampled ones) come from a Hub-layout folder."""
    import datasets

    folder = Path(str(source))
    files = sorted(str(p) for p in (folder / config).glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise ShardReadError(
            f"config {config} is not derived from trees: expected its shards in {folder / config}/ "
            "(write them with `action100m resample`)"
        )
    return datasets.load_dataset(
        "parquet",
        data_files={split: files},
        split=split,
        streaming=streaming,
        features=features_for(config),
        **kwargs,
    )
