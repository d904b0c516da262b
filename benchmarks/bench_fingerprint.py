"""The cost of fingerprinting a video (what a rerun checks to know a file changed) against stage 1.

`fingerprint.file_identity` reads the file's size and time and hashes its first and last MiB, so
its cost does not grow with the file beyond 2 MiB: N files of SIZE MB of random bytes are
fingerprinted with a warm page cache and, when this process may drop it (root), a cold one.
Stage 1 per video, same run: `segment_video` with the pixel encoder on a generated 60 s video
(the cheapest stage 1 there is), and the paper's V-JEPA 2 ViT-g from the H200 figure in
RESULTS.md (16.2 GPU-s per video-minute) at the release's mean video length (384 s).

    python benchmarks/bench_fingerprint.py [--files 200] [--size-mb 100] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results_md import machine, write_section  # noqa: E402

#: RESULTS.md, stage 1 on the H200: GPU-seconds per minute of video (ViT-g bf16, batch 4).
VITG_GPU_S_PER_VIDEO_MINUTE = 16.2
#: The release's mean video length: 14.6 years of video over 1,199,096 videos.
MEAN_VIDEO_S = 14.6 * 365.25 * 86400 / 1_199_096


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from action100m_hf.build.fingerprint import file_identity
    from action100m_hf.build.stages.segment.encoders import PixelEncoder
    from action100m_hf.build.stages.segment.ward import segment_video
    from action100m_hf.data.synthetic import make_scene_video, random_scenes

    work = Path(tempfile.mkdtemp(prefix="bench-fingerprint-"))
    try:
        block = os.urandom(1 << 20)
        paths = []
        for i in range(args.files):
            path = work / f"v{i:05d}.mp4"
            with open(path, "wb") as handle:
                for j in range(args.size_mb):
                    handle.write(block[j % 7 :] + block[: j % 7])  # a different MiB each time
            paths.append(str(path))
        timings = {}
        cold = drop_page_cache()
        if cold:
            start = time.perf_counter()
            for path in paths:
                file_identity(path)
            timings["cold"] = (time.perf_counter() - start) / len(paths)
        start = time.perf_counter()
        for path in paths:
            file_identity(path)
        timings["warm"] = (time.perf_counter() - start) / len(paths)
        video = work / "stage1.mp4"
        make_scene_video(video, random_scenes(0, 60.0), fps=25.0, size=(320, 180))
        start = time.perf_counter()
        segment_video(str(video), "stage1", PixelEncoder(), min_leaf=0.5)
        pixel_s = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    vitg_s = VITG_GPU_S_PER_VIDEO_MINUTE * MEAN_VIDEO_S / 60
    worst = timings.get("cold", timings["warm"])
    lines = [
        "## Fingerprints of the inputs (issue 12)",
        "",
        f"`python benchmarks/bench_fingerprint.py --files {args.files} --size-mb {args.size_mb}` ({machine()}): "
        f"{args.files} files of {args.size_mb} MB (random bytes; the cost does not grow past 2 MiB per file: size, "
        "time and a SHA-256 of the first and last MiB).",
        "",
        "| page cache | ms per video | vs stage 1, pixel encoder, 60 s video (%.2f s) | vs stage 1, V-JEPA 2 ViT-g on an H200, mean release video (%.0f GPU-s) |"
        % (pixel_s, vitg_s),
        "|---|---|---|---|",
    ]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {1000 * seconds:.2f} | {100 * seconds / pixel_s:.3f} % | {100 * seconds / vitg_s:.5f} % |")
    lines += ["", f"For 1,000 files of 100 MB: about {1000 * worst:.1f} s in all, read once per run: each rank its own "
              "videos, the merge all of them (8 threads)."]
    if not cold:
        lines.append("(No cold-cache figure: this process could not drop the page cache.)")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("fingerprint", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
