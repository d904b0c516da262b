"""Fingerprints: what each per-video result was computed from, so a rerun recomputes exactly the
videos whose inputs changed.

A video file's identity is its size, its modification time (ns) and a SHA-256 of its first and
last MiB: reading 2 MiB catches a replaced or re-encoded file without hashing gigabytes, and the
size and time catch an edit in the middle made by any tool that updates them. A stage's
fingerprint of a video hashes the stage's settings key with the previous stage's fingerprint of
that video, down to the inputs (file identity and metadata record, or the tree row it started from).
"""

from __future__ import annotations

import hashlib
import json
import os

#: Bytes hashed at each end of a video file.
EDGE_BYTES = 1 << 20
#: Hex digits kept of each fingerprint (64 bits).
DIGITS = 16


def digest(*parts) -> str:
    """A short stable hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:DIGITS]


def file_identity(path: str | None) -> str:
    """The identity of a video file (size, mtime, hash of its first and last MiB), or "missing"."""
    if path is None:
        return "missing"
    try:
        stat = os.stat(path)
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            sha.update(handle.read(EDGE_BYTES))
            if stat.st_size > EDGE_BYTES:
                handle.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
                sha.update(handle.read(EDGE_BYTES))
    except OSError as e:
        return f"unreadable: {e.strerror or type(e).__name__}"
    return f"{stat.st_size}:{stat.st_mtime_ns}:{sha.hexdigest()[:DIGITS]}"


def input_fingerprint(video_identity: str, metadata: dict | None, row: dict | None = None) -> dict:
    """The components of a video's inputs: its file, its metadata record, and the tree row it
    started from (builds that start after `segment`)."""
    parts = {"video": video_identity, "metadata": digest(metadata)}
    if row is not None:
        parts["row"] = digest(row)
    return parts


def chain(settings_key: str, upstream: str) -> str:
    """A stage's fingerprint of a video: its settings key over the upstream fingerprint."""
    return digest(settings_key, upstream)
