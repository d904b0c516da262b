"""The Hub layout: one directory of Parquet shards per config, and the README's `configs:` YAML.

Shards are named as `push_to_hub` names them (`train-00000-of-00003.parquet`), carry the
contract's Arrow schema, and are bounded in size; row groups are bounded in bytes so the Hub's
dataset viewer can page through tree rows (which are large: ~1 MB per video of the release).
Shards are written under temporary names and renamed at the end, so an interrupted write never
leaves a half-written config behind and never touches the config's previous shards until the new
ones are complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.data.schema import CONFIG_NAMES, DEFAULT_CONFIG, FLAT_CONFIGS, SPLIT, schema_for

#: Upper bound of one row group, in uncompressed Arrow bytes (a single larger row stands alone).
MAX_ROW_GROUP_BYTES = 8 * 1024 * 1024
#: Upper bound of one shard, in uncompressed Arrow bytes (Parquet files are smaller).
MAX_SHARD_BYTES = 512 * 1024 * 1024
SHARD_GLOB = f"{SPLIT}-*.parquet"


def shard_name(index: int, count: int, split: str = SPLIT) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def _bounded_slices(table: pa.Table, max_bytes: int) -> Iterable[pa.Table]:
    """Contiguous slices of `table` of at most `max_bytes` each (a single row may exceed it)."""
    if table.num_rows <= 1 or table.nbytes <= max_bytes:
        yield table
        return
    half = table.num_rows // 2
    yield from _bounded_slices(table.slice(0, half), max_bytes)
    yield from _bounded_slices(table.slice(half), max_bytes)


class ConfigWriter:
    """Writes one config's shards from a stream of tables or record batches."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        config: str,
        *,
        max_shard_bytes: int = MAX_SHARD_BYTES,
        max_row_group_bytes: int = MAX_ROW_GROUP_BYTES,
        compression: str = "zstd",
    ):
        self.config = config
        self.schema = schema_for(config)
        self.dir = Path(out_dir) / config
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.max_row_group_bytes = max_row_group_bytes
        self.compression = compression
        self._tmp_paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self.num_rows = 0

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if table.num_rows == 0:
            return
        table = table.cast(self.schema)
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= self.max_row_group_bytes:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        self._pending, self._pending_bytes = [], 0
        for group in _bounded_slices(table, self.max_row_group_bytes):
            if self._writer is not None and self._shard_bytes + group.nbytes > self.max_shard_bytes:
                self._writer.close()
                self._writer = None
            if self._writer is None:
                path = self.dir / f".tmp-{os.getpid()}-{len(self._tmp_paths):05d}.parquet"
                self._tmp_paths.append(path)
                self._writer = pq.ParquetWriter(path, self.schema, compression=self.compression)
                self._shard_bytes = 0
            self._writer.write_table(group, row_group_size=max(group.num_rows, 1))
            self._shard_bytes += group.nbytes
            self.num_rows += group.num_rows

    def close(self) -> list[Path]:
        """Finish the shards, replace the config's previous shards with them, return their paths."""
        self._flush_pending()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._tmp_paths:  # an empty config still gets one (empty) shard with the schema
            path = self.dir / f".tmp-{os.getpid()}-00000.parquet"
            pq.write_table(self.schema.empty_table(), path, compression=self.compression)
            self._tmp_paths.append(path)
        for old in self.dir.glob(SHARD_GLOB):
            old.unlink()
        final = []
        for i, tmp in enumerate(self._tmp_paths):
            dest = self.dir / shard_name(i, len(self._tmp_paths))
            os.replace(tmp, dest)
            final.append(dest)
        return final

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for tmp in self._tmp_paths:
            tmp.unlink(missing_ok=True)


def write_config(
    batches: Iterable[pa.Table | pa.RecordBatch], out_dir: str | os.PathLike, config: str, **kwargs
) -> list[Path]:
    """Write one config's shards under `out_dir/config/`; returns the shard paths."""
    writer = ConfigWriter(out_dir, config, **kwargs)
    try:
        for batch in batches:
            writer.write(batch)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def configs_present(folder: str | os.PathLike) -> list[str]:
    """The configs that have shards in a Hub-layout folder, in `schema.CONFIG_NAMES` order."""
    root = Path(folder)
    return [c for c in CONFIG_NAMES if any((root / c).glob(SHARD_GLOB))]


def configs_yaml(configs: Sequence[str]) -> list[dict]:
    """The README `configs:` entries for `configs`, with `default: true` on brief_action."""
    entries = []
    for config in configs:
        entry = {
            "config_name": config,
            "data_files": [{"split": SPLIT, "path": f"{config}/{SPLIT}-*.parquet"}],
        }
        if config == DEFAULT_CONFIG:
            entry["default"] = True
        entries.append(entry)
    return entries


def dataset_info_yaml(folder: str | os.PathLike, configs: Sequence[str]) -> list[dict]:
    """The README `dataset_info:` entries: features, row counts and sizes of each config.

    Besides documenting the data, they make `datasets`' cache key change with the content: for a
    local folder it hashes only the README's `configs` and `dataset_info`, so a folder rebuilt under
    the same name would otherwise load a stale cached copy.
    """
    import datasets

    from action100m_hf.data.schema import features_for

    entries = []
    for config in configs:
        files = sorted((Path(folder) / config).glob(SHARD_GLOB))
        metas = [pq.ParquetFile(f).metadata for f in files]
        num_rows = sum(m.num_rows for m in metas)
        num_bytes = sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups))
        info = datasets.DatasetInfo(
            features=features_for(config),
            config_name=config,
            splits=[{"name": SPLIT, "num_bytes": num_bytes, "num_examples": num_rows}],
            download_size=sum(f.stat().st_size for f in files),
            dataset_size=num_bytes,
        )
        entries.append({"config_name": config, **info._to_yaml_dict()})
    return entries


def update_readme_configs(folder: str | os.PathLike) -> Path:
    """Set the README's `configs:` and `dataset_info:` YAML to the configs present, keeping the rest."""
    from huggingface_hub import DatasetCard, DatasetCardData

    path = Path(folder) / "README.md"
    card = DatasetCard.load(path) if path.exists() else DatasetCard(
        "---\n" + DatasetCardData().to_yaml() + "\n---\n\n# Action100M-format dataset\n"
    )
    present = configs_present(folder)
    card.data.configs = configs_yaml(present)
    card.data.dataset_info = dataset_info_yaml(folder, present)
    card.save(path)
    return path


def write_hub_folder(
    tree_source, out_dir: str | os.PathLike, configs: Sequence[str] = ("tree",) + FLAT_CONFIGS, *, batch_size: int = 64
) -> Path:
    """Write `configs` (tree and flat ones) from tree shards into a Hub-layout folder, in one pass."""
    from action100m_hf.data.loading import iter_tree_batches, tree_files
    from action100m_hf.data.views import flat_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own_tree = out / "tree"
    reads_own_tree = all(Path(f).resolve().parent == own_tree.resolve() for f in tree_files(tree_source))
    targets = [c for c in configs if not (c == "tree" and reads_own_tree)]
    writers = {c: ConfigWriter(out, c) for c in targets}
    try:
        for batch in iter_tree_batches(tree_source, batch_size=batch_size):
            for config, writer in writers.items():
                writer.write(batch if config == "tree" else flat_table(batch, config))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()
    update_readme_configs(out)
    return out
