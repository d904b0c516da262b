"""The merge: every video's final result, from the work store, into the output's Hub-layout folder.

The output is always what the current inputs and settings give: the merge reads the results of
the current fingerprints (never a rank's memory, never a marker alone) and rewrites the folder
unless the manifest of its last merge shows the same results and every file it wrote still in
place (then it reads nothing but the manifest). It writes every config, `build/errors.parquet`, `build/summary.json`, `build/profile.yaml`
and the README's YAML; files meant for upload name videos by uid and by paths relative to the
input roots, never by absolute local paths (those stay in `_work/errors.parquet`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.files import write_atomic
from action100m_hf.build import fingerprint as fp
from action100m_hf.build.executor import BuildOptions, BuildPlan
from action100m_hf.build.inputs import input_root
from action100m_hf.build.store import WorkStore, write_failure
from action100m_hf.data.layout import BUILD_ERRORS, BUILD_INFO_DIR, BUILD_PROFILE, BUILD_SUMMARY
from action100m_hf.data.schema import CONFIG_NAMES, ERRORS_SCHEMA
from action100m_hf.data.tree import annotatable
from action100m_hf.errors import Action100MError, ErrorRecord

#: What the last merge wrote (in the work folder: local, never uploaded).
MANIFEST = "merged.json"


class IncompleteBuildError(Action100MError):
    """The merge found videos without a result for the current inputs (a rank has not finished)."""


@dataclass
class BuildSummary:
    """The outcome of a build: counts over every video, and this run's work per stage (summed
    over ranks): videos computed and why, found cached, seconds (model loading included)."""

    profile: str
    stages: list[str]
    videos: int
    videos_with_tree: int
    nodes: int
    annotatable_nodes: int
    annotated_nodes: int
    errors: int
    errors_by_stage: dict[str, int]
    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    removed_configs: list[str] = field(default_factory=list)
    #: Where the output is (local: not written into summary.json).
    output: str = ""

    def public(self) -> dict:
        """The summary as written into `build/summary.json` (no local paths)."""
        out = asdict(self)
        out.pop("output")
        return out

    def format(self) -> str:
        by_stage = ", ".join(f"{s}: {n}" for s, n in sorted(self.errors_by_stage.items()))
        lines = [
            f"videos           {self.videos} ({self.videos_with_tree} with a tree)",
            f"nodes            {self.nodes}",
            f"annotated nodes  {self.annotated_nodes} of {self.annotatable_nodes} annotatable",
            f"errors           {self.errors}" + (f" ({by_stage})" if self.errors else ""),
        ]
        for stage in self.stages:
            why = ", ".join(f"{n} {reason}" for reason, n in self.reasons.get(stage, {}).items())
            lines.append(
                f"{stage:<16} {self.seconds.get(stage, 0.0):7.1f} s ({self.computed.get(stage, 0)} videos computed"
                + (f": {why}" if why else "") + f", {self.cached.get(stage, 0)} cached)"
            )
        if self.removed_configs:
            lines.append(f"removed          {', '.join(self.removed_configs)} (made from earlier trees)")
        lines += [f"profile          {self.profile}", f"output           {self.output}"]
        return "\n".join(lines)


def _this_run(store: WorkStore, world_size: int) -> dict:
    """Computed/cached/reasons/seconds per stage, summed over the ranks' latest statistics."""
    totals: dict = {"computed": Counter(), "cached": Counter(), "seconds": Counter(), "reasons": {}}
    for rank in range(world_size):
        try:
            stats = json.loads(store.read("stats", f"{rank:05d}-of-{world_size:05d}.json"))
        except FileNotFoundError:
            continue
        for name in ("computed", "cached", "seconds"):
            totals[name].update(stats[name])
        for stage, reasons in stats["reasons"].items():
            totals["reasons"].setdefault(stage, Counter()).update(reasons)
    return {
        "computed": dict(totals["computed"]),
        "cached": dict(totals["cached"]),
        "seconds": {s: round(v, 3) for s, v in totals["seconds"].items()},
        "reasons": {s: dict(sorted(r.items())) for s, r in totals["reasons"].items()},
    }


def local_names(message: str, roots: Iterable[str]) -> str:
    """`message` with the absolute paths of the input roots and the output made relative."""
    for root in sorted({r for r in roots if r}, key=len, reverse=True):
        for form in {root, os.path.abspath(root), os.path.realpath(root)}:
            message = message.replace(form.rstrip("/") + "/", "")
    return message


def _errors_table(errors: Iterable[ErrorRecord]) -> pa.Table:
    ordered = sorted(errors, key=lambda e: (e.video_uid or "", e.stage, e.node_id or "", e.error))
    return pa.Table.from_pylist([e.as_dict() for e in ordered], schema=ERRORS_SCHEMA)


def _output_files(folder: Path) -> dict[str, int]:
    """Every file of a local output folder but the work folder, with its size."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] != "_work"
    }  # fmt: skip


def _current_manifest(store: WorkStore, digest: str) -> dict | None:
    """The last merge's manifest when it was of these results and all it wrote is still in the
    output (then nothing needs writing, nor reading: it holds the summary's counts)."""
    try:
        manifest = json.loads(store.read(MANIFEST))
    except (FileNotFoundError, ValueError):
        return None
    if manifest.get("digest") != digest or "summary" not in manifest:
        return None
    for name, size in manifest["files"].items():
        path = f"{store.output}/{name}"
        if not store.fs.exists(path) or (name != "README.md" and store.fs.size(path) != size):
            return None
    return manifest


def merge(options: BuildOptions, plan: BuildPlan) -> BuildSummary:
    """Merge every video's final result into the Hub-layout folder at the output.

    `IncompleteBuildError` when a video has no result for its current fingerprint yet.
    """
    store = WorkStore(options.output)
    final = plan.stages[-1]
    key = plan.keys[final]
    committed = store.committed(final, key)
    plan.fingerprint_videos(plan.videos)
    expected = {v.video_uid: plan.fingerprint(final, v.video_uid) for v in plan.videos}
    missing = [v.video_uid for v in plan.videos if expected[v.video_uid] not in committed.get(v.video_uid, ())]
    if missing:
        raise IncompleteBuildError(
            f"{len(missing)} of {len(plan.videos)} videos have no {final} result for the current inputs yet "
            f"(first: {', '.join(missing[:5])}); rerun the same command (every rank) to finish them"
        )
    profile = options.profile
    digest = fp.digest(sorted(expected.items()), sorted(options.configs), [e.as_dict() for e in plan.input_errors],
                       profile.as_dict(), plan.stages)  # fmt: skip
    this_run = _this_run(store, options.world_size)
    manifest = _current_manifest(store, digest)
    if manifest is not None:
        return BuildSummary(**{**manifest["summary"], **this_run, "removed_configs": [], "output": store.output_url})

    roots = [*map(input_root, options.inputs), options.video_root or "", os.path.dirname(options.metadata or ""),
             store.output]  # fmt: skip
    errors = list(plan.input_errors)
    counts: Counter = Counter()
    tree_files = []
    for v in plan.videos:
        result, _ = store.read_result(final, key, v.video_uid, expected[v.video_uid])
        errors += result.errors
        if result.row is not None:
            nodes = result.row["nodes"]
            counts["videos_with_tree"] += 1
            counts["nodes"] += len(nodes)
            counts["annotatable"] += len(annotatable(nodes))
            counts["annotated"] += sum(n.get("gpt") is not None for n in nodes)
            tree_files.append(store.result_url(final, key, v.video_uid, expected[v.video_uid]))
    if not tree_files:
        raise IncompleteBuildError(
            f"none of the {len(plan.videos)} videos got a tree; first errors:\n  "
            + "\n  ".join(local_names(e.error, roots) for e in errors[:10])
        )
    label = profile.name + (" with " + " ".join(profile.overrides) if profile.overrides else "")
    summary = BuildSummary(
        profile=label, stages=list(plan.stages), videos=len(plan.videos),
        videos_with_tree=counts["videos_with_tree"], nodes=counts["nodes"],
        annotatable_nodes=counts["annotatable"], annotated_nodes=counts["annotated"], errors=len(errors),
        errors_by_stage=dict(sorted(Counter(e.stage for e in errors).items())), output=store.output_url, **this_run,
    )  # fmt: skip
    public_errors = [ErrorRecord(e.video_uid, e.stage, e.node_id, local_names(e.error, roots)) for e in errors]
    store.commit(_parquet_bytes(_errors_table(errors)), "errors.parquet")
    files = _write_output(store, tree_files, options.configs, _errors_table(public_errors), summary, profile.to_yaml())
    store.commit(json.dumps({"digest": digest, "files": files, "summary": summary.public()}, indent=1).encode(), MANIFEST)
    return summary


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as e:
        raise write_failure(str(path), e) from e


def _write_output(store: WorkStore, tree_files: list[str], configs, errors: pa.Table, summary: BuildSummary,
                  profile_yaml: str) -> dict[str, int]:  # fmt: skip
    """Every config, the build info and the README's YAML into the output (staged locally when the
    output is remote); configs the folder has but this build does not write are removed."""
    from action100m_hf.data.layout import configs_present, write_hub_folder

    def write(folder: Path) -> dict[str, int]:
        try:
            stale = [c for c in configs_present(folder) if c not in configs]
            summary.removed_configs = sorted(stale)
            for config in stale:
                shutil.rmtree(folder / config)
            (folder / BUILD_INFO_DIR).mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / BUILD_ERRORS, _parquet_bytes(errors))
            _write_atomic(folder / BUILD_SUMMARY, (json.dumps(summary.public(), indent=1) + "\n").encode())
            _write_atomic(folder / BUILD_PROFILE, profile_yaml.encode())
            write_hub_folder(tree_files, folder, configs)
        except OSError as e:
            raise write_failure(getattr(e, "filename", None) or str(folder), e) from e
        return _output_files(folder)

    if store.is_local:
        return write(Path(store.output))
    with tempfile.TemporaryDirectory() as tmp:
        files = write(Path(tmp))
        # Shard counts change between builds: a config's old shards must not survive the upload.
        for config in CONFIG_NAMES:
            if store.fs.exists(f"{store.output}/{config}"):
                store.fs.rm(f"{store.output}/{config}", recursive=True)
        store.fs.put(f"{tmp}/", store.output, recursive=True)
    return files
