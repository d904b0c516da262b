"""Wall time per stage of the builder on the embedded sample, against the stages called directly.

The baseline is the same work without the builder: `segment_video`, `caption_tree` and
`aggregate_rows` called in a loop on the same videos with the same models, loaded once before
both. The ratio builder / direct per stage is the builder's overhead (commits, reads,
validation, progress);
the rerun ratio is what a resumed run costs against a fresh one. Also prints the real-time
factor (seconds of video per wall second).

    python benchmarks/bench_builder.py [--profile tiny] [--set stage2.num_frames=4 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from action100m_hf.build.pipeline import (
    STAGE_TITLES,
    STAGES,
    BuildOptions,
    StageModels,
    build,
    ensure_sample_videos,
    probe_duration,
    video_metadata,
)
from action100m_hf.build.settings import load_profile


def direct_stages(videos: list[Path], models: StageModels, profile) -> dict[str, float]:
    """Seconds per stage of the bare stage functions on `videos` (models already loaded)."""
    from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows
    from action100m_hf.build.stages.caption.captioners import caption_tree
    from action100m_hf.build.stages.segment.ward import segment_video

    seconds = {}
    start = time.perf_counter()
    rows = []
    for path in videos:
        seg = segment_video(str(path), path.stem, models.get("stage1"), min_leaf=profile.stage1.min_leaf)
        rows.append({"video_uid": path.stem, "metadata": video_metadata(None, seg.duration), "nodes": seg.nodes})
    seconds["stage1"] = time.perf_counter() - start
    start = time.perf_counter()
    for path, row in zip(videos, rows):
        row["nodes"], _ = caption_tree(row["nodes"], str(path), *models.get("stage2"), video_uid=path.stem)
    seconds["stage2"] = time.perf_counter() - start
    start = time.perf_counter()
    chunk = profile.run.stage3_batch_videos
    for i in range(0, len(rows), chunk):
        aggregate_rows(
            rows[i : i + chunk], models.get("stage3"), rounds=profile.stage3.rounds,
            global_depth=profile.stage3.global_depth, subtree_depth=profile.stage3.subtree_depth,
        )  # fmt: skip
    seconds["stage3"] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()
    profile = load_profile(args.profile, args.overrides)
    work = Path(tempfile.mkdtemp(prefix="bench-builder-"))
    try:
        sample = ensure_sample_videos(work / "sample", seed=profile.run.seed)
        videos = sorted(sample.glob("*.mp4"))
        video_seconds = sum(probe_duration(str(p)) for p in videos)
        load_before = os.getloadavg()[0]
        models = StageModels(profile)
        for stage in STAGES:
            models.get(stage)
        # Both runs use the loaded models: the figures are the stages' work, without loading.
        # An untimed pass over the shortest video first takes the first-call costs (kernel
        # selection, grammar compilation, decoder indexes) out of both.
        direct_stages([min(videos, key=lambda p: probe_duration(str(p)))], models, profile)
        direct = direct_stages(videos, models, profile)
        options = BuildOptions(output=str(work / "out"), inputs=[str(sample)], profile=profile, quiet=True)
        start = time.perf_counter()
        summary = build(options, models)
        total = time.perf_counter() - start
        builder = summary.seconds
        start = time.perf_counter()
        build(options, models)
        rerun = time.perf_counter() - start
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"profile {profile.source}; {len(videos)} videos, {video_seconds:.1f} s of video; "
          f"{os.cpu_count()} CPU cores; nodes {summary.nodes}, annotated {summary.annotated_nodes}")  # fmt: skip
    print("model loading (once, before both): " + ", ".join(f"{s} {models.load_seconds[s]:.1f} s" for s in STAGES))
    print(f"{'stage':<18}{'builder s':>10}{'direct s':>10}{'builder/direct':>16}")
    for s in STAGES:
        print(f"{s + ' ' + STAGE_TITLES[s]:<18}{builder[s]:>10.1f}{direct[s]:>10.1f}{builder[s] / direct[s]:>16.3f}")
    print(f"builder run {total:.1f} s (real-time factor {video_seconds / total:.2f}x); "
          f"rerun of the finished build {rerun:.2f} s = {rerun / total:.4f} of the first run; "
          f"load average {load_before:.1f} -> {load_after:.1f} (other processes share the cores)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({
            "profile": profile.source, "videos": len(videos), "video_seconds": video_seconds,
            "nodes": summary.nodes, "builder_seconds": builder, "load_seconds": models.load_seconds,
            "load_average": [load_before, load_after],
            "direct_seconds": direct, "total_seconds": total, "rerun_seconds": rerun,
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
