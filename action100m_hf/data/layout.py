"""The Hub layout: one directory of Parquet shards per config, and the README's `configs:` YAML.

Shards are named as `push_to_hub` names them (`train-00000-of-00003.parquet`), carry the
contract's Arrow schema, and are bounded in size; row groups are bounded in bytes so the Hub's
dataset viewer can page through tree rows (which are large: ~1 MB per video of the release).
Parquet is written as `datasets` 5 writes it (page index, content-defined chunking where pyarrow
has it), so that a re-upload of mostly unchanged data deduplicates on the Hub.
Shards are written under temporary names and renamed at the end, so an interrupted write never
leaves a half-written config behind and never touches the config's previous shards until the new
ones are complete.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.files import write_atomic
from action100m_hf.data.schema import CONFIG_NAMES, DEFAULT_CONFIG, FLAT_CONFIGS, SPLIT, schema_for

#: Upper bound of one row group, in uncompressed Arrow bytes (a single larger row stands alone).
MAX_ROW_GROUP_BYTES = 8 * 1024 * 1024
#: Upper bound of one shard, in uncompressed Arrow bytes (Parquet files are smaller).
MAX_SHARD_BYTES = 512 * 1024 * 1024
SHARD_GLOB = f"{SPLIT}-*.parquet"
#: The folder `flatten` (and the builder) write by default, in the working directory: then
#: `datasets.load_dataset("action100m", "brief_action")` loads it, as the dataset card says.
DEFAULT_FOLDER = "action100m"
#: A build's own files in its output (written by the builder's merge; read by the card, the tree
#: page and the push): the errors table, the summary, the resolved profile.
BUILD_INFO_DIR = "build"
BUILD_ERRORS = f"{BUILD_INFO_DIR}/errors.parquet"
BUILD_SUMMARY = f"{BUILD_INFO_DIR}/summary.json"
BUILD_PROFILE = f"{BUILD_INFO_DIR}/profile.yaml"


def parquet_write_options() -> dict:
    """`pq.ParquetWriter` options as `datasets` 5 writes Parquet: a page index, and content-defined
    chunking (data pages cut where the content says, so that an edit moves few pages) with
    `datasets`' chunk sizes, where pyarrow has it (21 and later)."""
    import datasets.config

    options: dict = {"write_page_index": True}
    if "use_content_defined_chunking" in inspect.signature(pq.ParquetWriter.__init__).parameters:
        options["use_content_defined_chunking"] = getattr(datasets.config, "DEFAULT_CDC_OPTIONS", True)
    return options


def _parquet_writer(path: Path, schema: pa.Schema, compression: str) -> pq.ParquetWriter:
    options = parquet_write_options()
    writer = pq.ParquetWriter(path, schema, compression=compression, **options)
    cdc = options.get("use_content_defined_chunking")
    if cdc:  # recorded as `datasets` records it
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})
    return writer


def io_error_of(error: OSError, path: Path) -> OSError:
    """`error` as an OSError naming `path`, with the system's reason (pyarrow's carry neither)."""
    if error.filename:
        return error
    number = error.errno
    if number is None:
        found = re.search(r"\[errno (\d+)\]", str(error))
        number = int(found.group(1)) if found else None
    reason = os.strerror(number) if number else str(error)
    return OSError(number, reason, str(path))


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
        try:
            self._write_pending()
        except OSError as error:  # pyarrow's IO errors name no file; the user needs the shard's
            raise io_error_of(error, self.dir / shard_name(len(self._tmp_paths) - 1, len(self._tmp_paths))) from error

    def _write_pending(self) -> None:
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
                self._writer = _parquet_writer(path, self.schema, self.compression)
                self._shard_bytes = 0
            self._writer.write_table(group, row_group_size=max(group.num_rows, 1))
            self._shard_bytes += group.nbytes
            self.num_rows += group.num_rows

    def close(self) -> list[Path]:
        """Finish the shards, replace the config's previous shards with them, return their paths."""
        self._flush_pending()
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if not self._tmp_paths:  # an empty config still gets one (empty) shard with the schema
                path = self.dir / f".tmp-{os.getpid()}-00000.parquet"
                self._tmp_paths.append(path)
                with _parquet_writer(path, self.schema, self.compression) as writer:
                    writer.write_table(self.schema.empty_table())
        except OSError as error:
            raise io_error_of(error, self.dir / shard_name(len(self._tmp_paths) - 1, len(self._tmp_paths))) from error
        for old in self.dir.glob(SHARD_GLOB):
            old.unlink()
        final = []
        for i, tmp in enumerate(self._tmp_paths):
            dest = self.dir / shard_name(i, len(self._tmp_paths))
            os.replace(tmp, dest)
            final.append(dest)
        return final

    def abort(self) -> None:
        """Drop the unfinished shards (the config's previous shards stay as they were)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:  # the failure that got us here (disk full) can strike again
                pass
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
    # A kill never leaves a truncated card (its text is the user's).
    return write_atomic(path, str(card))


def write_hub_folder(
    tree_source,
    out_dir: str | os.PathLike = DEFAULT_FOLDER,
    configs: Sequence[str] = ("tree",) + FLAT_CONFIGS,
    *,
    batch_size: int = 64,
    skip_invalid: bool = False,
) -> Path:
    """Write `configs` (tree and flat ones) from tree shards into a Hub-layout folder, in one pass.

    A tree that breaks a rule stops the write with `tree.validate`'s report (the folder keeps its
    previous shards), or with `skip_invalid` is left out with a `tree.SkippedInvalidTrees` warning.
    """
    from action100m_hf.data.loading import iter_tree_batches, tree_files
    from action100m_hf.data.views import flat_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own_tree = out / "tree"
    reads_own_tree = all(Path(f).resolve().parent == own_tree.resolve() for f in tree_files(tree_source))
    targets = [c for c in configs if not (c == "tree" and reads_own_tree)]
    writers = {c: ConfigWriter(out, c) for c in targets}
    try:
        on_invalid = "skip" if skip_invalid else "raise"
        for batch in iter_tree_batches(tree_source, batch_size=batch_size, on_invalid=on_invalid):
            for config, writer in writers.items():
                writer.write(batch if config == "tree" else flat_table(batch, config))
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    update_readme_configs(out)
    return out
