"""The builder's engine: videos in, Action100M-format annotations out, sharded and resumable.

Each stage walks one rank's share of the videos and commits one Parquet file per video (the tree
row so far plus the video's error records) under `<output>/_work/stage<N>/<cache key>/`, by
writing a temporary file and renaming it; a rerun skips every committed video. When every video
has a result, one process merges the committed files, sorted by video uid, into a Hub-layout
folder with an errors table and a summary.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.errors import Action100MError, AnnotationError, ErrorRecord, VideoNotFoundError, is_out_of_memory
from action100m_hf.build.settings import Profile, stage_keys
from action100m_hf.sharding import shard_by_duration
from action100m_hf.data.schema import ERRORS_SCHEMA, FLAT_CONFIGS, METADATA_FIELDS, tree_table
from action100m_hf.data.tree import annotatable, validate

STAGES = ("stage1", "stage2", "stage3")
#: What each stage does: its name in progress bars, summaries and the errors table's `stage`
#: (the names `captioners.caption_tree` and `aggregator.aggregate_rows` give their records).
STAGE_TITLES = {"stage1": "segment", "stage2": "caption", "stage3": "aggregate"}
#: Stage of the errors found in the inputs themselves (list files, metadata, file names).
INPUT_STAGE = "input"
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".3gp")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
#: Schema metadata keys of a committed per-video result.
_ERRORS_KEY, _SECONDS_KEY = b"action100m.errors", b"action100m.seconds"
#: Folder (inside the output) of the errors table and the build summary.
BUILD_INFO_DIR = "build"


class BuildInputError(Action100MError):
    """Inputs the builder cannot start from (no videos, two videos with one uid, ...)."""


class IncompleteBuildError(Action100MError):
    """The merge found videos without a committed result (a rank has not finished)."""


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInput:
    """One video to annotate: its uid (the file stem) and its path."""

    video_uid: str
    path: str


def _uid_of(path: str) -> tuple[str, ErrorRecord | None]:
    """The file stem as a uid; a stem that is not UTF-8 (bytes kept by surrogateescape) is
    replaced character by character with U+FFFD and reported."""
    stem = Path(path).stem
    try:
        stem.encode("utf-8")
        return stem, None
    except UnicodeEncodeError:
        clean = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        message = f"file name {path!r} is not valid UTF-8; video_uid {clean!r} replaces the bad bytes"
        return clean, ErrorRecord(clean, INPUT_STAGE, None, message)


def _list_file_paths(list_file: Path) -> list[str]:
    base = list_file.parent
    out = []
    # surrogateescape keeps non-UTF-8 bytes of a path so the file still opens.
    for line in list_file.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(str(base / line) if not os.path.isabs(line) else line)
    return out


def discover_videos(sources: Sequence[str | os.PathLike]) -> tuple[list[VideoInput], list[ErrorRecord]]:
    """Videos named by folders (searched recursively), globs, list files or paths, sorted by uid.

    A path that does not exist is kept: stage 1 reports it against its video. Two files with
    the same uid raise `BuildInputError` naming both.
    """
    paths: list[str] = []
    for source in sources:
        src = os.fspath(source)
        if os.path.isdir(src):
            found = (p for p in Path(src).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
            paths += sorted(map(str, found))
        elif any(c in src for c in "*?["):
            paths += sorted(p for p in globlib.glob(src, recursive=True) if os.path.isfile(p))
        elif src.lower().endswith(LIST_EXTENSIONS) and os.path.isfile(src):
            paths += _list_file_paths(Path(src))
        else:
            paths.append(src)
    videos: dict[str, VideoInput] = {}
    errors = []
    for path in paths:
        uid, error = _uid_of(path)
        if error:
            errors.append(error)
        if uid in videos and videos[uid].path != path:
            raise BuildInputError(f"two videos have the uid {uid!r}: {videos[uid].path} and {path}; rename one")
        videos[uid] = VideoInput(uid, path)
    if not videos:
        raise BuildInputError(f"no videos found in {', '.join(map(os.fspath, sources))}")
    return [videos[uid] for uid in sorted(videos)], errors


def _transcript(value) -> list[dict] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) and "text" in item for item in value):
        raise ValueError("transcript must be a list of {time, text} objects")
    # The release stores times as strings ("3.45").
    return [{"time": None if i.get("time") is None else str(i["time"]), "text": i["text"]} for i in value]


def read_metadata(path: str | os.PathLike, uids: Iterable[str]) -> tuple[dict[str, dict], list[ErrorRecord]]:
    """Metadata per video uid from a JSONL file, and the problems found in it.

    Each line is an object with `video_uid` and any of `title`, `description`, `transcript`
    ([{time, text}]), `view_count`, `like_count`, `duration`, `upload_date`. Lines naming a
    video that is not among the inputs, lines that are not JSON and bytes that are not UTF-8
    (replaced with U+FFFD) each give an error record naming the file and line.
    """
    known = set(uids)
    found: dict[str, dict] = {}
    errors: list[ErrorRecord] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                text = raw.decode("utf-8")
                bad_bytes = None
            except UnicodeDecodeError as e:
                text = raw.decode("utf-8", "replace")
                bad_bytes = f"byte {e.start}"
            if not text.strip():
                continue
            try:
                item = json.loads(text)
                if not isinstance(item, dict) or not isinstance(item.get("video_uid"), str):
                    raise ValueError("expected an object with a string video_uid")
                uid = item["video_uid"]
                unknown = sorted(set(item) - set(METADATA_FIELDS) - {"video_uid"})
                if unknown:
                    raise ValueError(
                        f"unknown field(s) {', '.join(unknown)}; metadata fields are {', '.join(METADATA_FIELDS)}"
                    )
                record = {name: item.get(name) for name in METADATA_FIELDS}
                record["transcript"] = _transcript(item.get("transcript"))
                tree_table([{"video_uid": uid, "metadata": record, "nodes": []}])  # types checked here
            except (ValueError, pa.ArrowException) as e:
                errors.append(ErrorRecord(None, INPUT_STAGE, None, f"metadata {where}: {e}"))
                continue
            problems = []
            if bad_bytes:
                problems.append(f"not valid UTF-8 at {bad_bytes}; undecodable bytes replaced with U+FFFD")
            if uid not in known:
                problems.append(f"video {uid!r} is not among the input videos")
            elif uid in found:
                problems.append(f"second line for video {uid!r}; the first one is kept")
            else:
                found[uid] = record
            errors += [ErrorRecord(uid, INPUT_STAGE, None, f"metadata {where}: {p}") for p in problems]
    return found, errors


def video_metadata(record: dict | None, duration: float) -> dict:
    """The row's metadata: the given record, with `duration` (whole seconds) from the video when absent."""
    out = {name: None for name in METADATA_FIELDS}
    out.update(record or {})
    if out["duration"] is None:
        out["duration"] = int(round(duration))
    return out


# --- sharding -------------------------------------------------------------------------------


def probe_duration(path: str) -> float:
    """A video's duration (s) from its container header; 0.0 when it cannot be read."""
    import av

    try:
        with av.open(path) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            for stream in container.streams.video:
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
    except (OSError, av.FFmpegError, ValueError):
        pass
    return 0.0


# --- the work folder --------------------------------------------------------------------------


@dataclass
class VideoResult:
    """A video's result after a stage: its tree row (None when a stage failed), every error so far,
    and the seconds this stage spent on it."""

    row: dict | None
    errors: list[ErrorRecord] = field(default_factory=list)
    seconds: float = 0.0


def encode_result(result: VideoResult) -> bytes:
    table = tree_table([result.row] if result.row is not None else [])
    meta = {
        _ERRORS_KEY: json.dumps([e.as_dict() for e in result.errors]).encode(),
        _SECONDS_KEY: repr(float(result.seconds)).encode(),
    }
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(meta), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def decode_result(data: bytes) -> VideoResult:
    table = pq.read_table(pa.BufferReader(data))
    meta = table.schema.metadata or {}
    errors = [ErrorRecord(**e) for e in json.loads(meta.get(_ERRORS_KEY, b"[]"))]
    rows = table.to_pylist()
    return VideoResult(rows[0] if rows else None, errors, float(meta.get(_SECONDS_KEY, b"0")))


class WorkStore:
    """`<output>/_work` on any fsspec filesystem: atomic commits (temporary name, then rename)."""

    def __init__(self, output: str | os.PathLike):
        import fsspec

        from fsspec.implementations.local import LocalFileSystem

        self.fs, root = fsspec.core.url_to_fs(os.fspath(output))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.output = root.rstrip("/")
        self.root = f"{self.output}/_work"

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def url(self, *parts: str) -> str:
        """`path(*parts)` with the filesystem's protocol, for readers that open URLs."""
        path = self.path(*parts)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def names(self, *parts: str, suffix: str = "") -> set[str]:
        """Names of the committed files in a folder (temporary files left out)."""
        folder = self.path(*parts)
        try:
            entries = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return set()
        names = (e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return {n for n in names if n.endswith(suffix) and ".tmp-" not in n}

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def commit(self, data: bytes, *parts: str) -> None:
        """Write `data` to `parts` so that readers see the whole file or nothing."""
        final = self.path(*parts)
        tmp = f"{final}.tmp-{os.getpid()}"
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        if self.is_local:
            os.replace(tmp, final)
        else:
            self.fs.mv(tmp, final)

    def read(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.path(*parts))

    def remove_temporaries(self, *parts: str) -> None:
        folder = self.path(*parts)
        if self.fs.exists(folder):
            for entry in self.fs.ls(folder, detail=False):
                if ".tmp-" in entry.rsplit("/", 1)[-1]:
                    self.fs.rm(entry)


def _result_name(uid: str) -> str:
    return f"{uid}.parquet"


# --- models -----------------------------------------------------------------------------------


def _torch_dtype(name: str | None):
    if name is None:
        return None
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype


class StageModels:
    """The models of every stage, built on first use so that a cached stage loads nothing.

    Pass built objects (`encoder`, `captioners=(plm, llama)`, `llm_backend`) to use them
    instead of the profile's: this is how tests inject models that fail on purpose.
    """

    def __init__(self, profile: Profile, device=None, *, encoder=None, captioners=None, llm_backend=None):
        self.profile = profile
        self.device = device
        self._built = {"stage1": encoder, "stage2": captioners, "stage3": llm_backend}
        self.load_seconds = {stage: 0.0 for stage in STAGES}

    def get(self, stage: str):
        if self._built[stage] is None:
            start = time.perf_counter()
            self._built[stage] = getattr(self, f"_build_{stage}")()
            self.load_seconds[stage] += time.perf_counter() - start
        return self._built[stage]

    def _build_stage1(self):
        from action100m_hf.build.stages.segment.encoders import build_encoder

        s = self.profile.stage1
        return build_encoder(
            s.encoder, model_id=s.model_id, device=s.device or self.device, dtype=_torch_dtype(s.dtype),
            batch_size=s.batch_size, seed=self.profile.run.seed,
        )

    def _build_stage2(self):
        from action100m_hf.build.stages.caption.captioners import build_captioner

        s = self.profile.stage2
        common = dict(
            profile=s.profile, backend=s.backend, device=s.device or self.device, dtype=s.dtype,
            batch_size=s.batch_size, max_new_tokens=s.max_new_tokens, num_frames=s.num_frames,
            frame_size=s.frame_size, seed=self.profile.run.seed,
        )
        return (
            build_captioner("plm", model_id=s.plm_model_id, **common),
            build_captioner("llama", model_id=s.llama_model_id, **common),
        )

    def _build_stage3(self):
        from action100m_hf.build.stages.aggregate.backends import build_llm_backend

        s = self.profile.stage3
        generation = {k: getattr(s, k) for k in ("temperature", "max_new_tokens", "max_string_length")}
        return build_llm_backend(
            s.backend,
            model=s.model,
            profile=s.profile,
            generation={k: v for k, v in generation.items() if v is not None},
            **s.backend_settings,
        )


def with_oom_retry(fn: Callable[[], object], models: Sequence, what: str, min_batch_size: int = 1):
    """`fn()`, retried with the models' `batch_size` halved after each out-of-memory error.

    The batch sizes are restored afterwards. When no model can shrink further, the error is
    re-raised as an `AnnotationError` naming `what` and the smallest batch size tried.
    """
    resizable = [m for m in models if hasattr(m, "batch_size")]
    original = [m.batch_size for m in resizable]
    try:
        while True:
            try:
                return fn()
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if not any(m.batch_size > min_batch_size for m in resizable):
                    tried = (
                        f"at batch size {min(m.batch_size for m in resizable)}" if resizable
                        else "(no batch size to reduce)"
                    )  # fmt: skip
                    raise AnnotationError(f"{what}: out of memory {tried}: {type(error).__name__}: {error}") from error
                for m in resizable:
                    m.batch_size = max(min_batch_size, m.batch_size // 2)
                _free_accelerator_memory()
    finally:
        for m, size in zip(resizable, original):
            m.batch_size = size


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- the stages -------------------------------------------------------------------------------


def _error(uid: str, stage: str, error: BaseException) -> ErrorRecord:
    return ErrorRecord(uid, STAGE_TITLES[stage], None, f"{type(error).__name__}: {error}")


def _checked(row: dict, stage: str, errors: list[ErrorRecord]) -> dict | None:
    """The row, or None with one error per broken tree rule (a broken tree never lands)."""
    violations = validate(row)
    errors.extend(
        ErrorRecord(row["video_uid"], STAGE_TITLES[stage], v.node_id, f"tree rule {v.rule}: {v.message}")
        for v in violations
    )
    return None if violations else row


def segment_one(video: VideoInput, metadata: dict | None, encoder, profile: Profile) -> VideoResult:
    """Stage 1 of one video: its tree row without captions, or an error record."""
    from action100m_hf.build.stages.segment.ward import segment_video

    errors: list[ErrorRecord] = []
    start = time.perf_counter()
    try:
        if not os.path.isfile(video.path):
            raise VideoNotFoundError(f"video {video.video_uid}: no file {video.path}")
        seg = with_oom_retry(
            lambda: segment_video(video.path, video.video_uid, encoder, min_leaf=profile.stage1.min_leaf),
            [encoder], f"video {video.video_uid} stage 1", profile.run.oom_min_batch_size,
        )
        row = {"video_uid": video.video_uid, "metadata": video_metadata(metadata, seg.duration), "nodes": list(seg.nodes)}
        row = _checked(row, "stage1", errors)
    except Exception as e:  # one video's failure is recorded; the run goes on
        errors.append(_error(video.video_uid, "stage1", e))
        row = None
    return VideoResult(row, errors, time.perf_counter() - start)


def caption_one(video: VideoInput, previous: VideoResult, captioners, profile: Profile) -> VideoResult:
    """Stage 2 of one video: captions on its nodes (per-node failures become error records)."""
    from action100m_hf.build.stages.caption.captioners import caption_tree

    errors = list(previous.errors)
    if previous.row is None:
        return VideoResult(None, errors, 0.0)
    start = time.perf_counter()
    row = dict(previous.row)
    try:
        nodes, node_errors = with_oom_retry(
            lambda: caption_tree(previous.row["nodes"], video.path, *captioners, video_uid=video.video_uid),
            captioners, f"video {video.video_uid} stage 2", profile.run.oom_min_batch_size,
        )
        errors.extend(node_errors)
        row["nodes"] = nodes
        row = _checked(row, "stage2", errors)
    except Exception as e:
        errors.append(_error(video.video_uid, "stage2", e))
        row = None
    return VideoResult(row, errors, time.perf_counter() - start)


def annotate_chunk(previous: dict[str, VideoResult], backend, profile: Profile) -> dict[str, VideoResult]:
    """Stage 3 of several videos in one batch (offline inference over all their nodes).

    If the batch fails as a whole, each video is retried alone, so one bad video costs only
    its own result.
    """
    from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows

    with_rows = {uid: r for uid, r in previous.items() if r.row is not None}
    out = {uid: VideoResult(None, list(r.errors), 0.0) for uid, r in previous.items() if r.row is None}
    if not with_rows:
        return out

    def run(uids: list[str]) -> tuple[dict[str, dict], list[ErrorRecord]]:
        rows = [dict(with_rows[u].row) for u in uids]
        what = f"video {uids[0]} stage 3" if len(uids) == 1 else f"videos {uids[0]}..{uids[-1]} stage 3"
        done, errors = with_oom_retry(
            lambda: aggregate_rows(
                rows, backend, rounds=profile.stage3.rounds,
                global_depth=profile.stage3.global_depth, subtree_depth=profile.stage3.subtree_depth,
            ),
            [backend], what, profile.run.oom_min_batch_size,
        )
        return {r["video_uid"]: r for r in done}, list(errors)

    def finish(uids: list[str], rows: dict[str, dict], errors: list[ErrorRecord], seconds: float) -> None:
        weights = {u: max(1, len(annotatable(with_rows[u].row["nodes"]))) for u in uids}
        total = sum(weights.values())
        for uid in uids:
            video_errors = list(with_rows[uid].errors) + [e for e in errors if e.video_uid == uid]
            row = rows.get(uid)
            if row is None:
                missing = AnnotationError("the aggregator returned no row for this video")
                video_errors.append(_error(uid, "stage3", missing))
            else:
                row = _checked(row, "stage3", video_errors)
            out[uid] = VideoResult(row, video_errors, seconds * weights[uid] / total)

    def attempt(uids: list[str]) -> Exception | None:
        start = time.perf_counter()
        try:
            rows, errors = run(uids)
        except Exception as e:  # recorded below, or retried video by video
            return e
        finish(uids, rows, errors, time.perf_counter() - start)
        return None

    uids = sorted(with_rows)
    error = attempt(uids)
    failures = {}
    if error is not None:
        failures = {uid: attempt([uid]) for uid in uids} if len(uids) > 1 else {uids[0]: error}
    for uid, error in failures.items():
        if error is not None:
            out[uid] = VideoResult(None, [*with_rows[uid].errors, _error(uid, "stage3", error)], 0.0)
    return out


# --- a rank's work ------------------------------------------------------------------------


@dataclass
class BuildOptions:
    """What to build: inputs, output (a folder or fsspec URL), profile, stages and the rank."""

    output: str
    inputs: list[str]
    profile: Profile
    metadata: str | None = None
    stages: tuple[str, ...] = STAGES
    rank: int = 0
    world_size: int = 1
    quiet: bool = False
    configs: tuple[str, ...] = ("tree",) + FLAT_CONFIGS


@dataclass
class RankStats:
    """What one rank did in this run: videos computed and found cached, and seconds per stage
    (wall time, model loading included; `load_seconds` is the loading alone)."""

    rank: int
    world_size: int
    videos: int
    computed: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})
    cached: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    load_seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    nodes: int = 0
    errors: int = 0


@dataclass
class BuildPlan:
    """Everything every rank derives identically from the options: videos, shards, keys."""

    videos: list[VideoInput]
    metadata: dict[str, dict]
    input_errors: list[ErrorRecord]
    shards: list[list[str]]
    keys: dict[str, str]
    final_stage: str
    run_id: str

    def shard(self, rank: int) -> list[VideoInput]:
        by_uid = {v.video_uid: v for v in self.videos}
        return [by_uid[uid] for uid in self.shards[rank]]


def plan_build(options: BuildOptions) -> BuildPlan:
    """Discover the videos, read the metadata, shard by duration, and name the run."""
    unknown = sorted(set(options.stages) - set(STAGES))
    if unknown or not options.stages:
        raise BuildInputError(f"unknown stage(s) {', '.join(unknown) or '(none given)'}; stages are {', '.join(STAGES)}")
    if not 0 <= options.rank < options.world_size:
        raise BuildInputError(f"rank {options.rank} is outside world size {options.world_size}")
    videos, input_errors = discover_videos(options.inputs)
    metadata: dict[str, dict] = {}
    if options.metadata:
        metadata, metadata_errors = read_metadata(options.metadata, [v.video_uid for v in videos])
        input_errors += metadata_errors
    durations = {}
    for v in videos:
        given = (metadata.get(v.video_uid) or {}).get("duration")
        durations[v.video_uid] = float(given) if given is not None else probe_duration(v.path)
    shards = shard_by_duration(durations, options.world_size)
    keys = stage_keys(options.profile)
    final_stage = max(options.stages)
    identity = json.dumps(
        {"videos": [asdict(v) for v in videos], "keys": keys, "stages": sorted(options.stages),
         "world_size": options.world_size, "metadata": options.metadata, "configs": list(options.configs)},
        sort_keys=True,
    )
    run_id = hashlib.sha1(identity.encode()).hexdigest()[:12]
    return BuildPlan(videos, metadata, input_errors, shards, keys, final_stage, run_id)


def _progress(total: int, stage: str, options: BuildOptions, initial: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=f"{stage} ({STAGE_TITLES[stage]})", unit="video",
        disable=options.quiet or options.rank != 0, dynamic_ncols=True, file=sys.stderr,
    )


def _run_stage(stage: str, pending: list[VideoInput], store: WorkStore, plan: BuildPlan,
               options: BuildOptions, models: StageModels, bar) -> None:  # fmt: skip
    """Compute and commit `stage` for the `pending` videos (their previous stage is committed)."""
    key, profile = plan.keys[stage], options.profile
    previous = STAGES[STAGES.index(stage) - 1] if stage != "stage1" else None
    if stage == "stage3":
        chunk = profile.run.stage3_batch_videos
        for i in range(0, len(pending), chunk):
            part = pending[i : i + chunk]
            inputs = {v.video_uid: _read_result(store, previous, plan.keys, v.video_uid) for v in part}
            needs_model = any(r.row is not None for r in inputs.values())
            results = annotate_chunk(inputs, models.get(stage) if needs_model else None, profile)
            for v in part:
                store.commit(encode_result(results[v.video_uid]), stage, key, _result_name(v.video_uid))
            bar.update(len(part))
        return
    for v in pending:
        if stage == "stage1":
            result = segment_one(v, plan.metadata.get(v.video_uid), models.get(stage), profile)
        else:
            prev = _read_result(store, previous, plan.keys, v.video_uid)
            result = caption_one(v, prev, models.get(stage) if prev.row is not None else None, profile)
        store.commit(encode_result(result), stage, key, _result_name(v.video_uid))
        bar.update(1)


def run_rank(options: BuildOptions, plan: BuildPlan, models: StageModels) -> RankStats:
    """Run the requested stages over this rank's videos, committing each video's result.

    Stages before the requested ones must be cached (`BuildInputError` otherwise). A rank that
    finished this run before (its completion marker exists) does nothing.
    """
    store = WorkStore(options.output)
    shard = plan.shard(options.rank)
    stats = RankStats(options.rank, options.world_size, len(shard))
    stages = STAGES[: STAGES.index(plan.final_stage) + 1]
    marker = ("completions", plan.run_id, f"{options.rank:05d}")
    if store.exists(*marker):
        stats.cached = {s: len(shard) if s in stages else 0 for s in STAGES}
        _log(options, f"rank {options.rank}: all {len(shard)} videos already done in this output")
        _commit_stats(store, plan, stats)
        return stats

    for stage in stages:
        done = store.names(stage, plan.keys[stage], suffix=".parquet")
        pending = [v for v in shard if _result_name(v.video_uid) not in done]
        stats.cached[stage] = len(shard) - len(pending)
        if not pending:
            continue
        if stage not in options.stages:
            raise BuildInputError(
                f"{len(pending)} video(s) of rank {options.rank} (first: {pending[0].video_uid}) have no "
                f"cached {stage} result under key {plan.keys[stage]}; include {stage} in the stages to run"
            )
        started = time.perf_counter()
        with _progress(len(shard), stage, options, stats.cached[stage]) as bar:
            _run_stage(stage, pending, store, plan, options, models, bar)
        stats.computed[stage] = len(pending)
        stats.load_seconds[stage] = models.load_seconds[stage]
        stats.seconds[stage] = time.perf_counter() - started

    errors: list[ErrorRecord] = []
    for v in shard:
        result = _read_result(store, plan.final_stage, plan.keys, v.video_uid)
        errors += result.errors
        stats.nodes += len(result.row["nodes"]) if result.row else 0
    stats.errors = len(errors)
    store.commit(_parquet_bytes(_errors_table(errors)), "errors", plan.run_id, f"{options.rank:05d}.parquet")
    _commit_stats(store, plan, stats)
    store.commit(plan.keys[plan.final_stage].encode(), *marker)
    return stats


def _commit_stats(store: WorkStore, plan: BuildPlan, stats: RankStats) -> None:
    store.commit(json.dumps(asdict(stats), indent=1).encode(), "stats", plan.run_id, f"{stats.rank:05d}.json")


def _read_result(store: WorkStore, stage: str, keys: dict[str, str], uid: str) -> VideoResult:
    return decode_result(store.read(stage, keys[stage], _result_name(uid)))


def _errors_table(errors: Iterable[ErrorRecord]) -> pa.Table:
    ordered = sorted(errors, key=lambda e: (e.video_uid or "", e.stage, e.node_id or "", e.error))
    return pa.Table.from_pylist([e.as_dict() for e in ordered], schema=ERRORS_SCHEMA)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _log(options: BuildOptions, message: str) -> None:
    if not options.quiet:
        print(message, file=sys.stderr, flush=True)


# --- merge and summary --------------------------------------------------------------------------


@dataclass
class BuildSummary:
    """The outcome of a build: counts over every video, and this run's seconds per stage
    (summed over ranks; a stage's seconds include loading its models)."""

    output: str
    profile: str
    videos: int
    videos_with_tree: int
    nodes: int
    annotatable_nodes: int
    annotated_nodes: int
    errors: int
    errors_by_stage: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        by_stage = ", ".join(f"{s}: {n}" for s, n in sorted(self.errors_by_stage.items()))
        lines = [
            f"videos           {self.videos} ({self.videos_with_tree} with a tree)",
            f"nodes            {self.nodes}",
            f"annotated nodes  {self.annotated_nodes} of {self.annotatable_nodes} annotatable",
            f"errors           {self.errors}" + (f" ({by_stage})" if self.errors else ""),
        ]
        for stage in STAGES:
            lines.append(
                f"{stage} {STAGE_TITLES[stage]:<9} {self.seconds.get(stage, 0.0):7.1f} s "
                f"({self.computed.get(stage, 0)} videos computed, {self.cached.get(stage, 0)} cached)"
            )
        lines += [f"profile          {self.profile}", f"output           {self.output}"]
        return "\n".join(lines)


def merge(options: BuildOptions, plan: BuildPlan) -> BuildSummary:
    """Merge every video's committed result into a Hub-layout folder at the output.

    Everything comes from committed files (never from a rank's memory), so it works after
    ranks died and were rerun; `IncompleteBuildError` when a video has no result yet. The
    folder gets every config, `build/errors.parquet` and `build/summary.json`. A merge already
    done for this run is not redone.
    """
    store = WorkStore(options.output)
    stats = [json.loads(store.read("stats", plan.run_id, n)) for n in sorted(store.names("stats", plan.run_id, suffix=".json"))]
    this_run = dict(
        seconds={s: sum(st["seconds"][s] for st in stats) for s in STAGES},
        computed={s: sum(st["computed"][s] for st in stats) for s in STAGES},
        cached={s: sum(st["cached"][s] for st in stats) for s in STAGES},
    )
    marker = ("merged", f"{plan.run_id}.json")
    if store.exists(*marker):
        return BuildSummary(**{**json.loads(store.read(*marker)), **this_run})

    final_key = plan.keys[plan.final_stage]
    done = store.names(plan.final_stage, final_key, suffix=".parquet")
    missing = [v.video_uid for v in plan.videos if _result_name(v.video_uid) not in done]
    if missing:
        raise IncompleteBuildError(
            f"{len(missing)} of {len(plan.videos)} videos have no {plan.final_stage} result yet "
            f"(first: {', '.join(missing[:5])}); rerun the same command to finish them"
        )
    errors = list(plan.input_errors)
    counts: Counter = Counter()
    tree_files = []
    for v in plan.videos:
        result = _read_result(store, plan.final_stage, plan.keys, v.video_uid)
        errors += result.errors
        if result.row is not None:
            nodes = result.row["nodes"]
            counts["videos_with_tree"] += 1
            counts["nodes"] += len(nodes)
            counts["annotatable"] += len(annotatable(nodes))
            counts["annotated"] += sum(n.get("gpt") is not None for n in nodes)
            tree_files.append(store.url(plan.final_stage, final_key, _result_name(v.video_uid)))
    if not tree_files:
        raise IncompleteBuildError(
            f"none of the {len(plan.videos)} videos got a tree; first errors:\n  "
            + "\n  ".join(e.error for e in errors[:10])
        )
    summary = BuildSummary(
        output=store.output if store.is_local else store.fs.unstrip_protocol(store.output),
        profile=options.profile.source,
        videos=len(plan.videos),
        videos_with_tree=counts["videos_with_tree"],
        nodes=counts["nodes"],
        annotatable_nodes=counts["annotatable"],
        annotated_nodes=counts["annotated"],
        errors=len(errors),
        errors_by_stage=dict(sorted(Counter(e.stage for e in errors).items())),
    )
    this_summary = replace(summary, **this_run)
    _write_hub_folder(store, tree_files, options.configs, _errors_table(errors), this_summary)
    for stage in STAGES:
        store.remove_temporaries(stage, plan.keys[stage])
    # Committed last: a merge killed before this point is redone by the next run.
    store.commit(json.dumps(asdict(summary)).encode(), *marker)
    return this_summary


def _write_hub_folder(store: WorkStore, tree_files: list[str], configs: Sequence[str],
                      errors: pa.Table, summary: BuildSummary) -> None:  # fmt: skip
    """Every config, the errors table and the summary into the output (staged locally if remote)."""
    import tempfile

    from action100m_hf.data.layout import write_hub_folder

    def write(folder: Path) -> None:
        # A merge killed mid-write leaves layout's temporary shards (".tmp-*"); no other
        # merge runs now, so they are stale.
        for config in configs:
            for stale in (folder / config).glob(".tmp-*"):
                stale.unlink()
        write_hub_folder(tree_files, folder, configs)
        info = folder / BUILD_INFO_DIR
        info.mkdir(parents=True, exist_ok=True)
        pq.write_table(errors, info / "errors.parquet")
        (info / "summary.json").write_text(json.dumps(asdict(summary), indent=1))

    if store.is_local:
        write(Path(store.output))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        store.fs.put(f"{tmp}/", store.output, recursive=True)


def build(
    options: BuildOptions,
    models: StageModels | None = None,
    *,
    wait_for_everyone: Callable[[], None] = lambda: None,
    do_merge: bool = True,
) -> BuildSummary | None:
    """Plan, run this rank's share, wait for every rank, and merge on rank 0.

    Returns the summary on the rank that merged; None on other ranks or without `do_merge`.
    """
    plan = plan_build(options)
    run_rank(options, plan, models or StageModels(options.profile))
    wait_for_everyone()
    if not do_merge or options.rank != 0:
        return None
    return merge(options, plan)


# --- the embedded sample ------------------------------------------------------------------------


def ensure_sample_videos(folder: str | os.PathLike, seed: int = 0) -> Path:
    """The default sample's videos (`synthetic.make_sample_videos`) in `folder`, made once.

    They are written to a temporary sibling and renamed into place, so an interrupted run never
    leaves half a sample and concurrent ranks do not clash.
    """
    import shutil
    import tempfile

    from action100m_hf.data.synthetic import make_sample_videos

    target = Path(folder)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make_sample_videos(tmp, seed=seed)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
