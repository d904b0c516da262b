"""The builder's figures: the README's main job (wall time per stage, peak memory), the builder
against the stages called directly, and `annotate` after `segment` on a 36 s 30 fps video.

1. Main job: `action100m build` in an empty folder (the embedded sample, tiny profile), as a
   child process: its wall time, the seconds of each stage from its summary, its peak resident
   memory (the child's ru_maxrss). Targets: <= 2 GiB; the aggregate stage <= 50 % of the wall time.
2. Overhead: the same videos and profile through `build()` with the stages' models loaded once,
   against `segment_video` / `caption_tree` / `aggregate_rows` called in a loop with the same
   models (the baseline). Target: builder / direct <= 1.1x per stage.
3. `action100m segment VIDEO --encoder pixel --profile tiny`, then `action100m annotate ...
   --profile tiny` on a generated 36 s 30 fps video: wall time and peak memory of each command.
   Targets for annotate: <= 3 minutes, <= 2 GiB.

    python benchmarks/bench_builder.py [--skip-overhead] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results_md import machine, write_section  # noqa: E402

GIB = 1 << 30


def child(args: list[str], cwd: Path) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run `python -m action100m_hf ARGS` alone in a fresh process: wall seconds, peak RSS bytes."""
    script = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "w = time.perf_counter() - t\n"
        "print(json.dumps({'wall': w, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,"
        " 'code': p.returncode, 'out': p.stdout, 'err': p.stderr[-3000:]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "action100m_hf", *args],
                          capture_output=True, text=True, cwd=cwd)  # fmt: skip
    result = json.loads(done.stdout)
    if result["code"] != 0:
        raise SystemExit(f"action100m {' '.join(args)} failed:\n{result['err']}")
    return result["wall"], result["rss"], result


def main_job(work: Path) -> dict:
    wall, rss, _ = child(["build", "--quiet"], work)
    summary = json.loads((work / "action100m" / "build" / "summary.json").read_text())
    return {"wall_s": wall, "peak_rss_bytes": rss, "stage_s": summary["seconds"], "nodes": summary["nodes"],
            "annotated": summary["annotated_nodes"], "videos": summary["videos"]}  # fmt: skip


def overhead(work: Path) -> dict:
    """Seconds per stage: the builder with the models loaded once, then the bare stage functions."""
    from action100m_hf.build.builder import build
    from action100m_hf.build.executor import BuildOptions, make_stages
    from action100m_hf.build.settings import load_profile
    from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows
    from action100m_hf.build.stages.caption.captioners import caption_tree
    from action100m_hf.build.stages.segment.stage import video_metadata
    from action100m_hf.build.stages.segment.ward import segment_video

    profile = load_profile("tiny")
    videos = sorted((work / "action100m" / "_work" / "sample").glob("*.mp4"))
    stages = make_stages(profile)
    for stage in stages.values():
        stage.models  # loaded before both runs

    def direct_run() -> dict:
        direct = {}
        start = time.perf_counter()
        rows = []
        for path in videos:
            seg = segment_video(str(path), path.stem, stages["segment"].models, min_leaf=profile["segment"].min_leaf)
            rows.append({"video_uid": path.stem, "metadata": video_metadata(None, seg.duration), "nodes": seg.nodes})
        direct["segment"] = time.perf_counter() - start
        start = time.perf_counter()
        for path, row in zip(videos, rows):
            row["nodes"], _ = caption_tree(row["nodes"], str(path), *stages["caption"].models, video_uid=path.stem)
        direct["caption"] = time.perf_counter() - start
        start = time.perf_counter()
        s = profile["aggregate"]
        for i in range(0, len(rows), s.batch_videos):
            aggregate_rows(rows[i : i + s.batch_videos], stages["aggregate"].models, rounds=s.rounds, retries=s.retries,
                           global_depth=s.global_depth, subtree_depth=s.subtree_depth)  # fmt: skip
        direct["aggregate"] = time.perf_counter() - start
        return direct

    def builder_run(name: str) -> dict:
        options = BuildOptions(output=str(work / name), inputs=[str(v) for v in videos], profile=profile, quiet=True)
        return build(options, stages).seconds

    # Alternated twice, each figure the faster of its two runs: both sides get warm caches.
    runs = [direct_run(), builder_run("again1"), direct_run(), builder_run("again2")]
    return {"builder_s": {s: min(runs[1][s], runs[3][s]) for s in runs[1]},
            "direct_s": {s: min(runs[0][s], runs[2][s]) for s in runs[0]}}  # fmt: skip


def annotate_job(work: Path) -> dict:
    from action100m_hf.data.synthetic import make_scene_video, random_scenes

    videos = work / "videos36"
    make_scene_video(videos / "long36.mp4", random_scenes(36, 36.0, min_seconds=1.0, max_seconds=4.0), fps=30.0, size=(128, 96))
    seg_wall, seg_rss, _ = child(["segment", str(videos), "--encoder", "pixel", "--profile", "tiny", "-o", "seg", "--quiet"], work)
    nodes = json.loads((work / "seg" / "build" / "summary.json").read_text())["nodes"]
    ann_wall, ann_rss, _ = child(["annotate", "seg", "--videos", str(videos), "--profile", "tiny", "-o", "ann", "--quiet"], work)
    summary = json.loads((work / "ann" / "build" / "summary.json").read_text())
    return {"nodes": nodes, "annotatable": summary["annotatable_nodes"], "annotated": summary["annotated_nodes"],
            "segment_wall_s": seg_wall, "segment_rss_bytes": seg_rss, "annotate_wall_s": ann_wall,
            "annotate_rss_bytes": ann_rss, "annotate_stage_s": summary["seconds"]}  # fmt: skip


def report(main: dict, over: dict | None, ann: dict) -> str:
    stages = ("segment", "caption", "aggregate")
    share = main["stage_s"]["aggregate"] / main["wall_s"]
    lines = [
        "## Builder: the main job, overhead, annotate (issue 11)",
        "",
        f"`python benchmarks/bench_builder.py` ({machine()}; cores shared with other jobs, so seconds are noisy).",
        "",
        f"**Main job** (`action100m build`, the embedded sample: {main['videos']} generated videos, tiny profile, "
        f"{main['nodes']} nodes, {main['annotated']} annotated): wall {main['wall_s']:.1f} s, "
        f"peak RSS **{main['peak_rss_bytes'] / GIB:.2f} GiB** (target <= 2 GiB; 12.8 GB before the redesign); "
        + ", ".join(f"{s} {main['stage_s'].get(s, 0):.1f} s" for s in stages)
        + f"; aggregate = **{100 * share:.0f} %** of the wall time (target <= 50 %; 87 % before).",
        "",
    ]
    if over:
        lines += ["| stage | builder (s) | direct calls (s) | builder / direct (target <= 1.1x) |", "|---|---|---|---|"]
        for s in stages:
            b, d = over["builder_s"].get(s, 0.0), over["direct_s"][s]
            lines.append(f"| {s} | {b:.2f} | {d:.2f} | {b / d:.2f}x |")
        lines.append("")
    lines.append(
        f"**annotate** on a generated 36 s 30 fps video after `segment --encoder pixel` ({ann['nodes']} nodes, "
        f"{ann['annotated']} of {ann['annotatable']} annotatable annotated): segment {ann['segment_wall_s']:.1f} s, "
        f"{ann['segment_rss_bytes'] / GIB:.2f} GiB; annotate **{ann['annotate_wall_s']:.1f} s** (target <= 180 s), "
        f"peak RSS **{ann['annotate_rss_bytes'] / GIB:.2f} GiB** (target <= 2 GiB; before: killed at 24 GB after 10 min)."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-overhead", action="store_true", help="skip the builder vs direct comparison")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-builder-"))
    try:
        main_result = main_job(work)
        over = None if args.skip_overhead else overhead(work)
        ann = annotate_job(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(main_result, over, ann)
    print(text)
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "builder.json").write_text(
        json.dumps({"main": main_result, "overhead": over, "annotate": ann}, indent=1) + "\n"
    )
    if not args.no_write:
        write_section("builder", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
