"""The stage contract: what every stage of the pipeline declares and does, whatever its models.

A stage has a `name` (the one word used for it everywhere: the profile section, `--stages`, the
work folder, the errors table, the summary), a `Settings` class (its profile section), the models
it loads (`load_models`, called only when it has work) and `run`, a function from a batch of
per-video work items to one `VideoResult` per item. The executor (`executor.py`) owns everything
else: sharding, the atomic commit per video, resume, the out-of-memory policy and progress.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from action100m_hf.errors import AnnotationError, ErrorRecord, VideoNotFoundError, is_out_of_memory


@dataclass(frozen=True)
class VideoInput:
    """One video to work on: its uid, its file and its metadata record (None when none is given).

    `name` is the path relative to the input root it was found under: what files meant for
    upload show instead of the local absolute `path`.
    """

    video_uid: str
    path: str | None
    name: str
    metadata: dict | None = None

    def existing_path(self) -> str:
        """The video's file; `VideoNotFoundError` naming the video when there is none."""
        if self.path is None or not os.path.isfile(self.path):
            raise VideoNotFoundError(f"video {self.video_uid}: no file {self.path or self.name}")
        return self.path


@dataclass
class VideoResult:
    """A video's result after a stage: its tree row (None once a stage failed on it), every error
    so far (earlier stages' included) and the seconds this stage spent on it."""

    row: dict | None
    errors: list[ErrorRecord] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class WorkItem:
    """What a stage gets for one video: the video, and the previous stage's row (None for a stage
    that starts from the video file alone)."""

    video: VideoInput
    row: dict | None


ProgressFactory = Callable[..., Any]


class Stage(ABC):
    """One step of the pipeline. Subclasses set `name`, `title`, `Settings` and implement
    `load_models` and `run`; `reads_rows` is False for a stage that starts from the video file."""

    name: ClassVar[str]
    title: ClassVar[str]
    Settings: ClassVar[type]
    reads_rows: ClassVar[bool] = True

    def __init__(self, settings, run_settings, *, device: str | None = None, models: Any = None,
                 progress: ProgressFactory | None = None):  # fmt: skip
        self.settings = settings
        self.run_settings = run_settings
        self.device = device
        self._models = models
        #: `progress(total=..., desc=..., unit=...)` -> a tqdm-like bar (disabled when quiet).
        self.progress = progress or _no_progress
        self.load_seconds = 0.0

    @property
    def models(self) -> Any:
        """The stage's models, loaded on first use (a stage whose results are cached loads nothing)."""
        if self._models is None:
            start = time.perf_counter()
            self._models = self.load_models()
            self.load_seconds += time.perf_counter() - start
        return self._models

    @abstractmethod
    def load_models(self) -> Any:
        """Build the stage's models from its settings."""

    def videos_per_call(self) -> int:
        """How many videos one `run` call takes (stages that batch across videos override it)."""
        return 1

    def resizable(self) -> Sequence:
        """The objects with a `batch_size` that the out-of-memory policy may halve."""
        models = self.models
        candidates = models if isinstance(models, (list, tuple)) else [models]
        return [m for m in candidates if hasattr(m, "batch_size")]

    @abstractmethod
    def run(self, items: list[WorkItem]) -> list[VideoResult]:
        """One result per item, in order: the new row (or None) and the new error records only.

        A failure that concerns one node is an error record; an exception means the whole call
        failed (the executor then retries each video alone and records what still fails).
        """

    def error(self, video_uid: str, message: str, node_id: str | None = None) -> ErrorRecord:
        return ErrorRecord(video_uid, self.name, node_id, message)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _no_progress(**_kwargs) -> _NoProgress:
    return _NoProgress()


def with_oom_retry(fn: Callable[[], Any], models: Sequence, what: str, min_batch_size: int):
    """`fn()`, retried with the models' `batch_size` halved after each out-of-memory error.

    The batch sizes are restored afterwards. When no model can shrink further, the error is
    re-raised as an `AnnotationError` naming `what` and the smallest batch size tried.
    """
    original = [m.batch_size for m in models]
    try:
        while True:
            try:
                return fn()
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if not any(m.batch_size > min_batch_size for m in models):
                    tried = (f"at batch size {min(m.batch_size for m in models)}" if models
                             else "(no batch size to reduce)")  # fmt: skip
                    raise AnnotationError(f"{what}: out of memory {tried}: {type(error).__name__}: {error}") from error
                for m in models:
                    m.batch_size = max(min_batch_size, m.batch_size // 2)
                _free_accelerator_memory()
    finally:
        for m, size in zip(models, original):
            m.batch_size = size


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
