"""Sources of Parquet shards: which files a source names, what identifies each one, how to read it.

A source is a local file, folder or glob, an `hf://`, `http(s)://` or any other fsspec URL (file,
folder or glob), or a list of those. Remote files are read with byte-range requests and no
read-ahead cache, so reading a few Parquet columns transfers about those columns' bytes. Every
failure is a `ShardReadError` that names the shard (and the row group) and the cause, in one line.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.errors import ShardReadError

_GLOB_CHARS = ("*", "?", "[")
#: Keys of an fsspec `info` dict that change when a remote file changes, by preference.
_VERSION_KEYS = ("ETag", "etag", "blob_id", "Last-Modified", "LastModified", "last_modified", "mtime", "created")
#: What an unreadable remote or local shard raises while it is opened or read.
READ_ERRORS = (pa.ArrowException, OSError, EOFError, ValueError)


def is_url(path: str) -> bool:
    return "://" in path


def _fs(url: str, storage_options: dict | None = None):
    """The filesystem of `url`; `storage_options` are keyed by protocol, as `datasets` takes them
    (`{"hf": {"token": ...}, "s3": {"anon": True}}`)."""
    import fsspec

    protocol = url.split("://", 1)[0]
    return fsspec.core.url_to_fs(url, **((storage_options or {}).get(protocol) or {}))


def _local_files(src: str, subfolder: str) -> list[str]:
    if any(c in src for c in _GLOB_CHARS):
        return sorted(globlib.glob(src, recursive=True))
    if os.path.isdir(src):
        root = Path(src)
        if (root / subfolder).is_dir():
            root = root / subfolder
        elif subfolder != "tree":  # a stored config's own folder, or nothing
            return sorted(str(p) for p in root.glob("*.parquet")) or _no_subfolder(src, subfolder)
        return sorted(str(p) for p in root.rglob("*.parquet") if "_work" not in p.parts)
    if os.path.isfile(src):
        return [src]
    raise ShardReadError(f"{_what(subfolder)} source {src}: no such file or folder")


def _remote_files(src: str, subfolder: str, storage_options: dict | None) -> list[str]:
    fs, path = _fs(src, storage_options)
    if any(c in path for c in _GLOB_CHARS):
        found = fs.glob(path)
    elif path.endswith(".parquet"):  # never list a file: listing an http(s) URL downloads it
        found = [path]
    else:
        base = path.rstrip("/")
        if fs.isdir(f"{base}/{subfolder}"):
            base = f"{base}/{subfolder}"
        found = fs.glob(f"{base}/*.parquet")
        if not found and subfolder != "tree":
            _no_subfolder(src, subfolder)
    return sorted(fs.unstrip_protocol(f) for f in found)


def _no_subfolder(src: str, subfolder: str):
    raise ShardReadError(f"config {subfolder}: expected its shards in {src.rstrip('/')}/{subfolder}/")


def _what(subfolder: str) -> str:
    return "tree" if subfolder == "tree" else f"{subfolder} config"


def parquet_files(
    source: str | os.PathLike | Sequence, subfolder: str = "tree", storage_options: dict | None = None
) -> list[str]:
    """The Parquet files a source names, sorted; a folder's `subfolder/` is used when it has one.

    Raises `ShardReadError` when the source names no file.
    """
    if isinstance(source, (list, tuple)):
        return [f for item in source for f in parquet_files(item, subfolder, storage_options)]
    src = str(source)
    try:
        files = _remote_files(src, subfolder, storage_options) if is_url(src) else _local_files(src, subfolder)
    except ShardReadError:
        raise
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ShardReadError(f"{_what(subfolder)} source {src}: no such file or folder") from e
    except (OSError, ValueError, ImportError) as e:
        raise ShardReadError(f"{_what(subfolder)} source {src}: cannot list files ({cause_text(e)})") from e
    if not files:
        raise ShardReadError(f"{_what(subfolder)} source {src}: no Parquet files found")
    return files


def file_identity(path: str, storage_options: dict | None = None) -> tuple[str, int | None, str | None]:
    """(path, size, version) of a shard: the mtime of a local file, the ETag (or blob id, or
    modification time) of a remote one, so that a rewritten file never matches its old identity."""
    try:
        if not is_url(path):
            stat = os.stat(path)
            return os.path.abspath(path), stat.st_size, str(stat.st_mtime_ns)
        fs, fs_path = _fs(path, storage_options)
        info = fs.info(fs_path)
    except FileNotFoundError as e:
        raise ShardReadError(f"shard {path}: file not found") from e
    except (OSError, ValueError) as e:
        raise ShardReadError(f"shard {path}: cannot read its size and version ({cause_text(e)})") from e
    version = next((str(info[k]) for k in _VERSION_KEYS if info.get(k) not in (None, "")), None)
    return path, info.get("size"), version


def cause_text(error: BaseException) -> str:
    """An exception as one short line (for messages that name a file and then the cause)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def open_parquet(path: str, storage_options: dict | None = None, what: str = "shard") -> pq.ParquetFile:
    """A `ParquetFile` over a local path or a URL; remote files without read-ahead (byte ranges only)."""
    try:
        if is_url(path):
            fs, fs_path = _fs(path, storage_options)
            # No cache: pyarrow asks for the footer and the column chunks it needs (pre-buffered and
            # coalesced per row group); a read-ahead block would fetch columns nobody asked for.
            handle = fs.open(fs_path, "rb", cache_type="none")
            return pq.ParquetFile(handle, pre_buffer=True)
        return pq.ParquetFile(path, pre_buffer=True)
    except FileNotFoundError as e:
        raise ShardReadError(f"{what} {path}: file not found") from e
    except READ_ERRORS as e:
        raise ShardReadError(f"{what} {path}: not a readable Parquet file ({cause_text(e)})") from e


def leaf_paths(shard: pq.ParquetFile) -> list[str]:
    """The dotted paths of every Parquet leaf column (`nodes.list.element.start`, ...)."""
    return [shard.schema.column(i).path for i in range(len(shard.schema))]


def read_batches(
    path: str,
    shard: pq.ParquetFile,
    columns: Sequence[str] | None,
    batch_size: int,
    row_groups: Sequence[int] | None = None,
    what: str = "shard",
) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` (top-level names or leaf paths), row group by row group."""
    groups = range(shard.num_row_groups) if row_groups is None else row_groups
    for group in groups:
        batches = shard.iter_batches(
            batch_size=batch_size, row_groups=[group], columns=None if columns is None else list(columns)
        )
        while True:  # the yield stays outside the try: closing this generator is not a read error
            try:
                batch = next(batches, None)
            except READ_ERRORS as e:
                raise ShardReadError(f"{what} {path}: row group {group}: cannot read ({cause_text(e)})") from e
            if batch is None:
                break
            yield batch


def compressed_bytes(metadata: pq.FileMetaData, leaves: Sequence[str] | None = None) -> int:
    """Compressed bytes of the column chunks of `leaves` (every leaf when None) in a file."""
    wanted = None if leaves is None else set(leaves)
    total = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            if wanted is None or column.path_in_schema in wanted:
                total += column.total_compressed_size
    return total
