"""The executor: runs any list of stages over one rank's share of the videos, resumably.

It plans the build (inputs, fingerprints, duration-balanced shards: every rank derives the same
plan), then walks the stages in order: a video whose result for the expected fingerprint is
committed is skipped; the others go to the stage in batches, under the out-of-memory policy
(batch sizes halved, then an error record), with a failed batch retried video by video. Every
result is checked against the tree rules and committed atomically, one file per video.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from action100m_hf.build import fingerprint as fp
from action100m_hf.build.inputs import BuildInputError, discover_videos, probe_duration, read_metadata, tree_inputs, with_metadata
from action100m_hf.build.settings import Profile, stage_keys
from action100m_hf.build.stage import Stage, VideoInput, VideoResult, WorkItem, with_oom_retry
from action100m_hf.build.stages import STAGE_CLASSES, STAGE_NAMES
from action100m_hf.build.store import WorkStore
from action100m_hf.data.schema import FLAT_CONFIGS
from action100m_hf.data.tree import validate
from action100m_hf.errors import ErrorRecord
from action100m_hf.sharding import shard_by_duration

#: The configs a build writes.
BUILD_CONFIGS = ("tree",) + FLAT_CONFIGS
#: Threads reading file identities (each reads 2 MiB: I/O bound, hashlib and reads release the GIL).
IDENTITY_THREADS = 8


@dataclass
class BuildOptions:
    """What to build and where: inputs, output (a folder or fsspec URL), profile, stages, rank.

    `inputs` are video folders, globs, list files or files; or, for a build that starts after
    `segment`, `tree_source` names tree rows (file, folder, glob) whose videos are
    `<video_root>/<video_uid>.<ext>`. `retry_failed` recomputes the videos whose committed result
    holds an error; `force` recomputes everything.
    """

    output: str
    profile: Profile
    inputs: list[str] = field(default_factory=list)
    metadata: str | None = None
    tree_source: str | None = None
    video_root: str | None = None
    stages: tuple[str, ...] = STAGE_NAMES
    rank: int = 0
    world_size: int = 1
    quiet: bool = False
    configs: tuple[str, ...] = BUILD_CONFIGS
    retry_failed: bool = False
    force: bool = False


@dataclass
class BuildPlan:
    """Everything every rank derives identically from the options.

    `stages` are the pipeline's stages from the first one of this build to the last requested
    one. `fingerprint(stage, uid)` is what the video's result of that stage must have been computed
    from and `inputs[uid]` the components of the video's inputs: both are computed on first need,
    so a rank fingerprints only its own videos (and the merge all of them).
    """

    videos: list[VideoInput]
    input_errors: list[ErrorRecord]
    stages: list[str]
    keys: dict[str, str]
    shards: list[list[str]]
    seeds: dict[str, dict] | None = None
    inputs: dict[str, dict] = field(default_factory=dict)

    def shard(self, rank: int) -> list[VideoInput]:
        by_uid = {v.video_uid: v for v in self.videos}
        return [by_uid[uid] for uid in self.shards[rank]]

    def fingerprint_videos(self, videos: list[VideoInput]) -> None:
        """The inputs' components of `videos` (the file identities read in parallel: I/O bound)."""
        todo = [v for v in videos if v.video_uid not in self.inputs]
        with ThreadPoolExecutor(max_workers=IDENTITY_THREADS) as pool:
            identities = list(pool.map(lambda v: fp.file_identity(v.path), todo))
        for video, identity in zip(todo, identities):
            row = self.seeds[video.video_uid] if self.seeds is not None else None
            self.inputs[video.video_uid] = fp.input_fingerprint(identity, video.metadata, row)

    def upstream(self, stage: str, uid: str) -> str:
        """The fingerprint a stage's result of `uid` hashes with its settings key."""
        index = self.stages.index(stage)
        return self.fingerprint(self.stages[index - 1], uid) if index else fp.digest(self.inputs[uid])

    def fingerprint(self, stage: str, uid: str) -> str:
        """What the result of `stage` for video `uid` is computed from (`fingerprint_videos` first)."""
        return fp.chain(self.keys[stage], self.upstream(stage, uid))


def plan_build(options: BuildOptions) -> BuildPlan:
    """Discover the videos (or read the tree rows), read the metadata, shard by duration."""
    unknown = sorted(set(options.stages) - set(STAGE_NAMES))
    if unknown or not options.stages:
        raise BuildInputError(f"unknown stage(s) {', '.join(unknown) or '(none given)'}; stages are {', '.join(STAGE_NAMES)}")
    if not 0 <= options.rank < options.world_size:
        raise BuildInputError(f"rank {options.rank} is outside world size {options.world_size}")
    requested = sorted(STAGE_NAMES.index(s) for s in options.stages)
    seeds = None
    if options.tree_source is not None:
        if requested[0] == 0:
            raise BuildInputError("tree rows are the input of the stages after segment; segment starts from videos")
        videos, seeds = tree_inputs(options.tree_source, options.video_root)
        errors: list[ErrorRecord] = []
        first = requested[0]
    else:
        videos, errors = discover_videos(options.inputs)
        first = 0
    if options.metadata:
        metadata, metadata_errors = read_metadata(options.metadata, [v.video_uid for v in videos])
        videos = with_metadata(videos, metadata)
        errors += metadata_errors
    stages = list(STAGE_NAMES[first : requested[-1] + 1])
    keys = stage_keys(options.profile, stages)
    durations = {}
    for v in videos:
        given = (v.metadata or {}).get("duration")
        durations[v.video_uid] = float(given) if given is not None else probe_duration(v.path)
    shards = shard_by_duration(durations, options.world_size)
    return BuildPlan(videos, errors, stages, keys, shards, seeds)


@dataclass
class RankStats:
    """What one rank did in this run, per stage: videos computed (and why) and found cached, and
    seconds (wall time, model loading included; `load_seconds` is the loading alone)."""

    rank: int
    world_size: int
    videos: int
    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)


def _failed(store: WorkStore, stage: str, key: str, uid: str, fingerprint: str) -> bool:
    """Whether a committed result holds no row or an error of this stage."""
    rows, errors, _ = store.result_footer(stage, key, uid, fingerprint)
    return rows == 0 or any(e["stage"] == stage for e in errors)


def _reason(store: WorkStore, plan: BuildPlan, stage: str, uid: str, have: set[str], elsewhere: set[str]) -> str:
    """Why the video's result of `stage` must be computed (`elsewhere`: the uids with a result of
    the stage under other settings)."""
    key = plan.keys[stage]
    if not have:
        return "settings changed" if uid in elsewhere else "new"
    _, _, old = store.result_footer(stage, key, uid, sorted(have)[0])
    if plan.stages.index(stage) > 0:
        return "upstream changed"
    new = plan.inputs[uid]
    changed = [name for name in ("video", "metadata", "row") if old.get(name) != new.get(name)]
    labels = {"video": "video file changed", "metadata": "metadata changed", "row": "tree row changed"}
    return labels[changed[0]] if changed else "inputs changed"


class StageRunner:
    """Runs one stage over pending videos and commits each video's result."""

    def __init__(self, stage: Stage, store: WorkStore, plan: BuildPlan, *, oom_min_batch_size: int):
        self.stage, self.store, self.plan = stage, store, plan
        self.oom_min_batch_size = oom_min_batch_size

    def previous(self, video: VideoInput) -> VideoResult:
        """The row the stage starts from, with the errors so far."""
        plan, name = self.plan, self.stage.name
        index = plan.stages.index(name)
        if index == 0:
            row = plan.seeds[video.video_uid] if plan.seeds is not None else None
            return VideoResult(row)
        before = plan.stages[index - 1]
        result, _ = self.store.read_result(before, plan.keys[before], video.video_uid, plan.fingerprint(before, video.video_uid))
        return result

    def attempt(self, items: list[WorkItem]) -> list[VideoResult]:
        uids = [item.video.video_uid for item in items]
        what = f"video {uids[0]}" if len(uids) == 1 else f"videos {uids[0]}..{uids[-1]}"
        return with_oom_retry(lambda: self.stage.run(items), self.stage.resizable(), f"{what} {self.stage.name}",
                              self.oom_min_batch_size)  # fmt: skip

    def run_isolated(self, items: list[WorkItem]) -> list[VideoResult]:
        """The stage's results; when the call fails as a whole, each video alone, so one bad video
        costs only its own result."""
        try:
            return self.attempt(items)
        except Exception as error:  # recorded below, or retried video by video
            if len(items) == 1:
                return [VideoResult(None, [self.stage.error(items[0].video.video_uid, f"{type(error).__name__}: {error}")])]
        return [self.run_isolated([item])[0] for item in items]

    def run(self, pending: list[VideoInput], replaces: dict[str, set[str]], bar) -> None:
        name, plan = self.stage.name, self.plan
        key = plan.keys[name]
        per_call = self.stage.videos_per_call()
        for first in range(0, len(pending), per_call):
            batch = pending[first : first + per_call]
            previous = [self.previous(v) for v in batch]
            work = [(v, p) for v, p in zip(batch, previous) if p.row is not None or not self.stage.reads_rows]
            start = time.perf_counter()
            outputs = self.run_isolated([WorkItem(v, p.row) for v, p in work]) if work else []
            seconds = (time.perf_counter() - start) / max(1, len(work))
            produced = {v.video_uid: out for (v, _), out in zip(work, outputs)}
            for video, prev in zip(batch, previous):
                out = produced.get(video.video_uid)
                errors = list(prev.errors)
                row = None
                if out is not None:
                    errors += out.errors
                    row = self._checked(out.row, errors) if out.row is not None else None
                uid = video.video_uid
                inputs = {**plan.inputs[uid], "upstream": plan.upstream(name, uid)}
                result = VideoResult(row, errors, seconds if out is not None else 0.0)
                self.store.commit_result(name, key, uid, plan.fingerprint(name, uid), result, inputs,
                                         replaces.get(uid, set()))  # fmt: skip
            bar.update(len(batch))

    def _checked(self, row: dict, errors: list[ErrorRecord]) -> dict | None:
        """The row, or None with one error per broken tree rule (a broken tree never lands)."""
        violations = validate(row)
        errors.extend(self.stage.error(row["video_uid"], f"tree rule {v.rule}: {v.message}", v.node_id) for v in violations)
        return None if violations else row


def make_stages(profile: Profile, *, device: str | None = None, progress=None, given: dict | None = None) -> dict[str, Stage]:
    """One `Stage` per pipeline stage, from the profile; `given` replaces some (tests inject models)."""
    stages = {}
    for name, cls in STAGE_CLASSES.items():
        stages[name] = (given or {}).get(name) or cls(profile[name], profile.run, device=device, progress=progress)
    return stages


def run_rank(options: BuildOptions, plan: BuildPlan, stages: dict[str, Stage], progress) -> RankStats:
    """Run the build's stages over this rank's videos, committing each video's result.

    Stages of the build that are not requested must already be committed for every video of the
    rank (`BuildInputError` otherwise).
    """
    store = WorkStore(options.output)
    shard = plan.shard(options.rank)
    plan.fingerprint_videos(shard)
    stats = RankStats(options.rank, options.world_size, len(shard))
    for name in plan.stages:
        key = plan.keys[name]
        store.remove_temporaries(name, key)
        committed = store.committed(name, key)
        elsewhere = {uid for k in store.other_keys(name, key) for uid in store.committed(name, k)}
        pending, replaces, reasons = [], {}, Counter()
        for video in shard:
            uid = video.video_uid
            expected = plan.fingerprint(name, uid)
            have = committed.get(uid, set())
            if expected in have and not options.force and not (options.retry_failed and _failed(store, name, key, uid, expected)):
                continue
            if options.force:
                reason = "forced"
            elif expected in have:
                reason = "retrying a failure"
            else:
                reason = _reason(store, plan, name, uid, have, elsewhere)
            pending.append(video)
            replaces[uid] = have
            reasons[reason] += 1
        stats.cached[name] = len(shard) - len(pending)
        stats.computed[name] = len(pending)
        stats.reasons[name] = dict(sorted(reasons.items()))
        if not pending:
            continue
        if name not in options.stages:
            raise BuildInputError(
                f"{len(pending)} video(s) of rank {options.rank} (first: {pending[0].video_uid}) have no "
                f"{name} result for the current inputs and settings; include {name} in the stages to run"
            )
        stage = stages[name]
        started = time.perf_counter()
        runner = StageRunner(stage, store, plan, oom_min_batch_size=options.profile.run.oom_min_batch_size)
        with progress(total=len(shard), initial=stats.cached[name], desc=name, unit="video") as bar:
            runner.run(pending, replaces, bar)
        stats.seconds[name] = time.perf_counter() - started
        stats.load_seconds[name] = stage.load_seconds
    store.commit(_stats_json(stats), "stats", f"{options.rank:05d}-of-{options.world_size:05d}.json")
    return stats


def _stats_json(stats: RankStats) -> bytes:
    import json

    return json.dumps(asdict(stats), indent=1).encode()
