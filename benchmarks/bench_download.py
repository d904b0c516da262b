"""Benchmark: `action100m download` against plain `yt-dlp` on the same local HTTP server.

20 copies of one generated H.264 video (640x360, 60 s, ~2.4 MB) served from 127.0.0.1 by the tests'
`VideoServer` (yt-dlp's generic extractor). (1) Per-video overhead, unthrottled: `download_videos(
..., workers=1)` (verification, status table, resume bookkeeping included) against one
`YoutubeDL.download` of the same URLs, each timed inside a fresh process around the call (client
set-up included, interpreter start-up and imports excluded), with 1 and with 20 files: the per-video
cost is the difference over 19 files, the per-run cost what remains (medians of `--repeats` runs);
and both command lines end to end (`action100m download --workers 1` vs `yt-dlp -a urls.txt`) with
their peak RSS. (2) Throughput with 1 and 4 workers when the server sends each connection at
`--connection-rate` (a remote server's per-connection pace). Usage:

    python benchmarks/bench_download.py [--files 20] [--repeats 3] [--connection-rate 2M] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' VideoServer: the same local server

#: Runs a command and prints its peak RSS (KiB): each wrapper process accounts for its own children.
_PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


#: The two calls timed in-process, imports done first, client set-up included (argv: ids or URL
#: file, output folder, URL template).
_PLAIN_CALL = (
    "import sys, time, yt_dlp\n"
    "urls = open(sys.argv[1]).read().split()\n"
    "started = time.perf_counter()\n"
    "with yt_dlp.YoutubeDL({'outtmpl': sys.argv[2] + '/%(id)s.%(ext)s', 'quiet': True, 'noprogress': True}) as ydl:\n"
    "    ydl.download(urls)\n"
    "print(time.perf_counter() - started)\n"
)
_OURS_CALL = (
    "import sys, time, av, tqdm.auto, yt_dlp\n"
    "from action100m_hf.data.download import download_videos\n"
    "started = time.perf_counter()\n"
    "download_videos(sys.argv[1], sys.argv[2], workers=1, url_template=sys.argv[3], progress=False, min_free_space=0)\n"
    "print(time.perf_counter() - started)\n"
)


def call_seconds(code: str, *argv: str) -> float:
    """Seconds a call took inside a fresh process (printed by `code`)."""
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `command`, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, int(done.stdout.split()[-1]) / 1024


def make_videos(folder: Path, files: int) -> list[str]:
    """`files` copies of one generated video (a textured pan with a moving box, as `bench_frames`)."""
    from bench_frames import generate_video

    uids = [f"bench{i:02d}" for i in range(files)]
    generate_video(folder / f"{uids[0]}.mp4", 60.0, (640, 360), 25.0, 2.0)
    for uid in uids[1:]:
        shutil.copyfile(folder / f"{uids[0]}.mp4", folder / f"{uid}.mp4")
    return uids


def ours(ids: Path, out: Path, url_template: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "action100m_hf", "download", str(ids), "--out", str(out), "--workers", str(workers),
            "--url-template", url_template, "--min-free", "0", "--quiet"]  # fmt: skip


def plain(urls: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "yt_dlp", "-a", str(urls), "-o", f"{out}/%(id)s.%(ext)s", "--quiet", "--no-progress"]


def main() -> int:
    from test_download import VideoServer
    from yt_dlp.utils import parse_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connection-rate", default="2M", help="bytes/s per connection for the throughput runs")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    rate = parse_bytes(args.connection_rate)

    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        tmp = Path(tmp)
        served = tmp / "served"
        served.mkdir()
        uids = make_videos(served, args.files)
        size = (served / "bench00.mp4").stat().st_size
        ids = tmp / "ids.txt"
        ids.write_text("\n".join(uids) + "\n")
        results: dict = {"files": args.files, "file_bytes": size, "runs": {}}
        with VideoServer(served) as server:
            for name in ("yt-dlp", "action100m"):
                results["runs"][name] = {"call_seconds": {}}
                for count in (1, args.files):
                    chosen = uids[:count]
                    (tmp / f"ids-{count}.txt").write_text("\n".join(chosen) + "\n")
                    urls = tmp / f"urls-{count}.txt"
                    urls.write_text("\n".join(server.url_template.format(video_uid=u) for u in chosen) + "\n")
                    seconds = []
                    for _ in range(args.repeats):
                        out = tmp / "call"
                        if name == "yt-dlp":
                            seconds.append(call_seconds(_PLAIN_CALL, str(urls), str(out)))
                        else:
                            ids_file = str(tmp / f"ids-{count}.txt")
                            seconds.append(call_seconds(_OURS_CALL, ids_file, str(out), server.url_template))
                        assert len(list(out.glob("*.mp4"))) == count, f"{name}: not every file downloaded"
                        shutil.rmtree(out)
                    results["runs"][name]["call_seconds"][count] = statistics.median(seconds)
                wall, rss = [], []
                for _ in range(args.repeats):
                    out = tmp / "command"
                    command = plain(urls, out) if name == "yt-dlp" else ours(ids, out, server.url_template, 1)
                    seconds, peak = timed(command)
                    assert len(list(out.glob("*.mp4"))) == args.files, f"{name}: not every file downloaded"
                    shutil.rmtree(out)
                    wall.append(seconds)
                    rss.append(peak)
                results["runs"][name].update(command_seconds=statistics.median(wall), peak_rss_mb=max(rss))
            server.bytes_per_second = rate
            for workers in (1, 4):
                out = tmp / f"workers-{workers}"
                seconds, rss = timed(ours(ids, out, server.url_template, workers))
                results["runs"][f"workers={workers}"] = {"seconds": seconds, "peak_rss_mb": rss}

    runs, n = results["runs"], args.files
    print(f"{n} files of {size / 1e6:.2f} MB (640x360 H.264, 60 s), local server, medians of {args.repeats} runs")
    for name in ("yt-dlp", "action100m"):
        r = runs[name]
        one, many = r["call_seconds"][1], r["call_seconds"][n]
        r["per_video_ms"] = (many - one) / (n - 1) * 1000
        r["fixed_s"] = one - r["per_video_ms"] / 1000
        print(f"{name:>11}: {r['per_video_ms']:.1f} ms/video + {r['fixed_s'] * 1000:.0f} ms per run (set-up, first "
              f"request) in-process; command line {r['command_seconds']:.2f} s for {n} files, peak RSS "
              f"{r['peak_rss_mb']:.0f} MB")  # fmt: skip
    overhead = runs["action100m"]["per_video_ms"] - runs["yt-dlp"]["per_video_ms"]
    results["overhead_ms_per_video"] = overhead
    print(f"per-video overhead of download_videos over plain yt-dlp: {overhead:+.1f} ms "
          f"({runs['action100m']['per_video_ms'] / runs['yt-dlp']['per_video_ms']:.2f}x); per run: "
          f"{(runs['action100m']['fixed_s'] - runs['yt-dlp']['fixed_s']) * 1000:+.0f} ms; command lines: "
          f"{runs['action100m']['command_seconds'] / runs['yt-dlp']['command_seconds']:.2f}x")  # fmt: skip
    for workers in (1, 4):
        r = runs[f"workers={workers}"]
        r["mb_per_s"] = n * size / r["seconds"] / 1e6
        print(f"workers={workers}: {r['seconds']:.2f} s, {r['mb_per_s']:.1f} MB/s, {n / r['seconds']:.2f} videos/s "
              f"(server: {rate / 1e6:.1f} MB/s per connection), peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
    results["speedup_4_vs_1"] = runs["workers=1"]["seconds"] / runs["workers=4"]["seconds"]
    print(f"4 workers vs 1: {results['speedup_4_vs_1']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
