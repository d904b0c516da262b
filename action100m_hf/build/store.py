"""The work store: every per-video stage result, committed atomically under the output's `_work/`.

A result lives at `_work/<stage>/<settings key>/<video_uid>.<fingerprint>.parquet`: one Parquet
file holding the tree row so far (none once a stage failed on the video), with the video's error
records, the seconds spent and the fingerprint's components in its schema metadata. A file is
written under a temporary name and renamed, so readers see whole files or nothing; a commit then
removes the video's results of older fingerprints in the same folder. Results of other settings
stay in their own folders, so switching settings back reuses them. Works on any fsspec filesystem.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.build.stage import VideoResult
from action100m_hf.data.schema import tree_table
from action100m_hf.errors import Action100MError, ErrorRecord

_ERRORS_KEY, _SECONDS_KEY, _INPUTS_KEY = b"action100m.errors", b"action100m.seconds", b"action100m.inputs"
RESULT_SUFFIX = ".parquet"
_TMP = ".tmp-"


class OutputWriteError(Action100MError):
    """A file of the output could not be written (disk full, permission denied, ...)."""


def write_failure(path: str, error: OSError) -> OutputWriteError:
    """One clear line for a failed write: the path and the system's reason."""
    reason = error.strerror or str(error) or type(error).__name__
    return OutputWriteError(f"cannot write {path}: {reason}")


def result_name(video_uid: str, fingerprint: str) -> str:
    return f"{video_uid}.{fingerprint}{RESULT_SUFFIX}"


def parse_result_name(name: str) -> tuple[str, str] | None:
    """(video_uid, fingerprint) of a result file name; None for other files."""
    if not name.endswith(RESULT_SUFFIX) or _TMP in name:
        return None
    uid, dot, fingerprint = name[: -len(RESULT_SUFFIX)].rpartition(".")
    return (uid, fingerprint) if dot and uid else None


def encode_result(result: VideoResult, inputs: dict) -> bytes:
    table = tree_table([result.row] if result.row is not None else [])
    meta = {
        _ERRORS_KEY: json.dumps([e.as_dict() for e in result.errors]).encode(),
        _SECONDS_KEY: repr(float(result.seconds)).encode(),
        _INPUTS_KEY: json.dumps(inputs, sort_keys=True).encode(),
    }
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(meta), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def decode_result(data: bytes) -> tuple[VideoResult, dict]:
    """The result and the fingerprint components it was computed from."""
    table = pq.read_table(pa.BufferReader(data))
    meta = table.schema.metadata or {}
    errors = [ErrorRecord(**e) for e in json.loads(meta.get(_ERRORS_KEY, b"[]"))]
    rows = table.to_pylist()
    result = VideoResult(rows[0] if rows else None, errors, float(meta.get(_SECONDS_KEY, b"0")))
    return result, json.loads(meta.get(_INPUTS_KEY, b"{}"))


class WorkStore:
    """`<output>/_work` on any fsspec filesystem: atomic commits (temporary name, then rename)."""

    def __init__(self, output: str | os.PathLike):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.fs, root = fsspec.core.url_to_fs(os.fspath(output))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.output = root.rstrip("/")
        self.root = f"{self.output}/_work"

    @property
    def output_url(self) -> str:
        """The output as the user names it (with its protocol when not local)."""
        return self.output if self.is_local else self.fs.unstrip_protocol(self.output)

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def url(self, *parts: str) -> str:
        """`path(*parts)` with the filesystem's protocol, for readers that open URLs."""
        path = self.path(*parts)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def names(self, *parts: str) -> list[str]:
        """Names of the files in a folder (temporary files left out)."""
        try:
            entries = self.fs.ls(self.path(*parts), detail=False)
        except FileNotFoundError:
            return []
        names = (e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return [n for n in names if _TMP not in n]

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def commit(self, data: bytes, *parts: str) -> None:
        """Write `data` to `parts` so that readers see the whole file or nothing; on failure no
        temporary file is left and `OutputWriteError` names the path."""
        final = self.path(*parts)
        tmp = f"{final}{_TMP}{os.getpid()}"
        try:
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(tmp, data)
            if self.is_local:
                os.replace(tmp, final)
            else:
                self.fs.mv(tmp, final)
        except OSError as e:
            self._remove_quietly(tmp)
            raise write_failure(final, e) from e
        except BaseException:
            self._remove_quietly(tmp)
            raise

    def _remove_quietly(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except OSError:
            pass

    def read(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.path(*parts))

    def remove(self, *parts: str) -> None:
        self._remove_quietly(self.path(*parts))

    def remove_temporaries(self, *parts: str) -> None:
        """Delete the temporary files a killed writer left in a folder (no other writer runs)."""
        try:
            entries = self.fs.ls(self.path(*parts), detail=False)
        except FileNotFoundError:
            return
        for entry in entries:
            if _TMP in entry.rsplit("/", 1)[-1]:
                self._remove_quietly(entry)

    # --- per-video results -------------------------------------------------------------------

    def committed(self, stage: str, key: str) -> dict[str, set[str]]:
        """video uid -> the fingerprints of its committed results under `stage/key`."""
        out: dict[str, set[str]] = defaultdict(set)
        for name in self.names(stage, key):
            parsed = parse_result_name(name)
            if parsed:
                out[parsed[0]].add(parsed[1])
        return out

    def other_keys(self, stage: str, key: str) -> list[str]:
        """The settings keys of `stage` with results, other than `key`."""
        return [k for k in self.names(stage) if k != key]

    def commit_result(self, stage: str, key: str, video_uid: str, fingerprint: str, result: VideoResult,
                      inputs: dict, replaces: set[str] = frozenset()) -> None:  # fmt: skip
        """Commit a video's result, then remove its results of the fingerprints in `replaces`."""
        self.commit(encode_result(result, inputs), stage, key, result_name(video_uid, fingerprint))
        for old in replaces - {fingerprint}:
            self.remove(stage, key, result_name(video_uid, old))

    def read_result(self, stage: str, key: str, video_uid: str, fingerprint: str) -> tuple[VideoResult, dict]:
        return decode_result(self.read(stage, key, result_name(video_uid, fingerprint)))

    def result_footer(self, stage: str, key: str, video_uid: str, fingerprint: str) -> tuple[int, list[dict], dict]:
        """(rows, error records, fingerprint components) of a committed result, from its Parquet
        footer alone (the tree row is not read)."""
        with self.fs.open(self.path(stage, key, result_name(video_uid, fingerprint)), "rb") as handle:
            meta = pq.read_metadata(handle)
        extra = meta.metadata or {}
        return meta.num_rows, json.loads(extra.get(_ERRORS_KEY, b"[]")), json.loads(extra.get(_INPUTS_KEY, b"{}"))

    def result_url(self, stage: str, key: str, video_uid: str, fingerprint: str) -> str:
        return self.url(stage, key, result_name(video_uid, fingerprint))
