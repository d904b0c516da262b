"""Typed errors of action100m-hf and the per-item error record of the pipeline.

Every error names what it is about (file, video, node, time, rule) in its message, so a
user reading a log line knows where to look without a traceback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class Action100MError(Exception):
    """Base class of every error raised on purpose by action100m-hf."""


class UnknownConfigError(Action100MError, KeyError):
    """A config name that the dataset does not define."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ShardReadError(Action100MError):
    """A tree shard (Parquet file) that is missing, unreadable or of the wrong schema."""


class TreeValidationError(Action100MError):
    """A tree row that breaks one or more rules of the released format."""

    def __init__(self, message: str, violations: list | None = None):
        super().__init__(message)
        self.violations = list(violations or [])


class VideoNotFoundError(Action100MError, FileNotFoundError):
    """No file for a video uid (the message lists the paths tried)."""


class VideoDecodeError(Action100MError):
    """A video file that cannot be opened or decoded (corrupt, no video stream, ...)."""


class FrameTimestampError(Action100MError):
    """A requested time farther than the tolerance from every decoded frame."""


class SegmentationError(Action100MError):
    """Stage 1 could not produce a tree for a video."""


class ModelNotAvailableError(Action100MError):
    """A model (weights, tokenizer or package) that cannot be loaded; the message names it."""


class AnnotationError(Action100MError):
    """Stage 2 or 3 could not produce a valid output for a node."""


class ProfileError(Action100MError):
    """A run profile file or override that fails validation."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for an accelerator or host out-of-memory error (torch's, or a RuntimeError saying so)."""
    return type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


@dataclass(frozen=True)
class ErrorRecord:
    """One failure of the pipeline on one video (and node, when it is about a node).

    Stored in the output's errors table (`schema.ERRORS_SCHEMA`).
    """

    video_uid: str
    stage: str
    node_id: str | None
    error: str

    def as_dict(self) -> dict:
        return asdict(self)
