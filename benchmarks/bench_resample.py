"""Benchmark of semantic resampling: k-means (faiss vs scikit-learn), the sampling pass, MiniLM.

Embeddings are random unit vectors (the embedding step is measured separately, on real text with
all-MiniLM-L6-v2). Peak memory is the process's peak resident set during each step (Linux VmHWM,
reset before the step). Prints each figure as a ratio against its baseline from the same run:
faiss against scikit-learn's MiniBatchKMeans, Arrow dedup against a Python dict loop; then the
projection to the paper's scale (13 M unique texts, k = 1e5) from the measured k-means rates.

    python benchmarks/bench_resample.py                      # the issue's sizes: 1 M vectors, k=1e4
    python benchmarks/bench_resample.py --n 1000000 --k 1000 # what a 2-core machine runs in minutes
    python benchmarks/bench_resample.py --smoke              # seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action100m_hf.resample.kmeans import DEFAULT_NITER, TRAIN_POINTS_PER_CENTROID, cluster_embeddings  # noqa: E402
from action100m_hf.resample.sampling import (  # noqa: E402
    group_texts,
    resampled_table,
    sample_over_clusters,
    take_rows,
)

VERBS = "cut chop slice pour stir open close pick place hold wipe fold push pull turn press lift".split()
OBJECTS = "onion paper bottle lid box cloth knife cup pan dough tape card phone door screw board".split()
MANNERS = ["", " carefully", " with a knife", " on the table", " by hand", " slowly", " again"]
ADJECTIVES = "red small wooden old plastic wet empty large".split()


def short_texts(n: int, seed: int) -> list[str]:
    """n distinct action-like phrases ("fold the wet cloth by hand"); at most 14,336."""
    combos = [f"{v} the {a} {o}{m}" for v in VERBS for a in ADJECTIVES for o in OBJECTS for m in MANNERS]
    order = np.random.default_rng(seed).permutation(len(combos))[:n]
    return [combos[i] for i in order]


def _rss_peak_reset() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each step gets its own peak.
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextmanager
def measured(results: dict, name: str):
    """Record wall seconds and peak RSS (GiB) of the block under `results[name]`."""
    _rss_peak_reset()
    start = time.perf_counter()
    yield
    results[name] = {
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_gib": round(_status_kib("VmHWM") / 2**20, 3),
    }
    print(f"  {name:28s} {results[name]['seconds']:9.2f} s   peak RSS {results[name]['peak_rss_gib']:.2f} GiB", flush=True)


def synthetic_segments(n: int, seed: int) -> pa.Table:
    """n brief-action rows with Zipf-distributed short texts (heavily duplicated, as the paper's)."""
    rng = np.random.default_rng(seed)
    pool = np.array([f"{v} the {o}{m}" for v in VERBS for o in OBJECTS for m in MANNERS] +
                    [f"{v} {o} {i}" for i, (v, o) in enumerate(zip(rng.choice(VERBS, n // 10), rng.choice(OBJECTS, n // 10)))])
    ranks = np.minimum(rng.zipf(1.3, size=n) - 1, len(pool) - 1)
    texts = pa.array(pool[rng.permutation(len(pool))][ranks].tolist(), pa.string())
    return pa.table({
        "video_uid": pa.array([f"vid{i // 100:07d}" for i in range(n)]),
        "node_id": pa.array([f"node{i:09d}" for i in range(n)]),
        "start": pa.array(np.arange(n, dtype=np.float32) % 100),
        "end": pa.array(np.arange(n, dtype=np.float32) % 100 + 2),
        "duration": pa.array(np.full(n, 2.0, np.float32)),
        "text": texts,
    })


def random_unit_vectors(n: int, d: int, seed: int, shard: int = 100_000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shards = []
    for start in range(0, n, shard):
        x = rng.standard_normal((min(shard, n - start), d), dtype=np.float32)
        shards.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return shards


def kmeans_flops(n: int, k: int, d: int, niter: int, train: int) -> float:
    """Multiply-adds x 2 of training (niter passes over the sample) and of assigning all n."""
    return 2.0 * d * k * (niter * train + n)


def bench_kmeans(args, results: dict) -> None:
    shards = random_unit_vectors(args.n, args.d, seed=1)
    train = min(args.n, TRAIN_POINTS_PER_CENTROID * args.k)
    flops = kmeans_flops(args.n, args.k, args.d, args.niter, train)
    print(f"k-means: {args.n} random {args.d}-d vectors, k={args.k}, {args.niter} iterations, "
          f"training sample {train}")
    for backend in args.backends:
        with measured(results, f"kmeans_{backend}"):
            cluster_embeddings(shards, args.k, seed=0, backend=backend, niter=args.niter)
        results[f"kmeans_{backend}"]["gflops"] = round(flops / results[f"kmeans_{backend}"]["seconds"] / 1e9, 1)
    if {"faiss", "sklearn"} <= set(args.backends):
        ratio = results["kmeans_sklearn"]["seconds"] / results["kmeans_faiss"]["seconds"]
        results["kmeans_faiss_speedup_vs_sklearn"] = round(ratio, 2)
        print(f"  faiss is {ratio:.2f}x faster than scikit-learn MiniBatchKMeans")


def bench_sampling(args, results: dict) -> None:
    segments = synthetic_segments(args.n, seed=2)
    print(f"sampling pass: {args.n} segments, k={args.k}, {args.size} draws (k-means with faiss)")
    with measured(results, "dedup_arrow"):
        groups = group_texts(segments.column("text"))
    baseline_rows = min(args.n, 200_000)
    with measured(results, f"dedup_python_dict_{baseline_rows}"):
        positions: dict[str, list[int]] = {}
        for i, text in enumerate(segments.column("text").slice(0, baseline_rows).to_pylist()):
            positions.setdefault(text, []).append(i)
    per_row_python = results[f"dedup_python_dict_{baseline_rows}"]["seconds"] / baseline_rows
    ratio = per_row_python * args.n / results["dedup_arrow"]["seconds"]
    results["dedup_arrow_speedup_vs_python_dict"] = round(ratio, 1)
    print(f"  Arrow dedup speed per row vs a Python dict loop: {ratio:.1f}x "
          f"({len(groups.texts)} unique texts, {groups.stats()['duplicate_groups']} duplicate groups)")
    shards = random_unit_vectors(len(groups.texts), args.d, seed=3)
    with measured(results, "sampling_kmeans"):
        clusters = cluster_embeddings(shards, args.k, seed=0, backend=args.backends[0], niter=args.niter)
    with measured(results, "sampling_draw_and_gather"):
        sample = sample_over_clusters(clusters.labels, groups, args.size, seed=0)
        table = resampled_table(take_rows(iter(segments.to_batches(65_536)), sample.rows), sample)
    assert table.num_rows == args.size
    total = sum(results[s]["seconds"] for s in ("dedup_arrow", "sampling_kmeans", "sampling_draw_and_gather"))
    results["sampling_pass_seconds"] = round(total, 2)
    results["sampling_unique_texts"] = len(groups.texts)
    print(f"  whole sampling pass (dedup + k-means + draw + gather): {total:.2f} s")


def bench_minilm(args, results: dict) -> None:
    from action100m_hf.resample.embeddings import load_embedder

    texts = short_texts(args.embed_texts, seed=4)
    embedder = load_embedder("cpu", device="cpu", batch_size=256)
    embedder.encode(texts[:256])  # warm-up: the first call pays one-off allocations
    with measured(results, "minilm_embed"):
        embedder.encode(texts)
    rate = len(texts) / results["minilm_embed"]["seconds"]
    results["minilm_texts_per_second"] = round(rate, 1)
    print(f"  all-MiniLM-L6-v2 on CPU: {rate:.0f} texts/s ({len(texts)} unique short texts, batch 256)")


def project(results: dict, args) -> None:
    """Paper scale (default settings) from the measured k-means rate (cost is linear in n x k x d)."""
    for backend in args.backends:
        rate = results[f"kmeans_{backend}"]["gflops"] * 1e9
        for d in (384, 768):
            n, k = 13_000_000, 100_000
            flops = kmeans_flops(n, k, d, DEFAULT_NITER, TRAIN_POINTS_PER_CENTROID * k)
            hours = flops / rate / 3600
            results[f"projected_13M_k1e5_d{d}_{backend}_hours"] = round(hours, 1)
            print(f"  projected 13 M texts, k=1e5, d={d}, {DEFAULT_NITER} iterations, {backend} on this machine: {hours:.1f} h "
                  f"({flops / 1e15:.0f} PFLOP at {rate / 1e9:.0f} GFLOP/s)")
    if "minilm_texts_per_second" in results:
        hours = 13_000_000 / results["minilm_texts_per_second"] / 3600
        results["projected_13M_minilm_cpu_hours"] = round(hours, 1)
        print(f"  projected MiniLM embedding of 13 M texts on this CPU: {hours:.1f} h")


PARTS = {"kmeans": bench_kmeans, "sampling": bench_sampling, "minilm": bench_minilm}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors for k-means and segments to sample")
    parser.add_argument("--k", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--niter", type=int, default=DEFAULT_NITER)
    parser.add_argument("--size", type=int, default=1_000_000, help="draws of the sampling pass")
    parser.add_argument("--embed-texts", type=int, default=4000)
    parser.add_argument("--backends", nargs="+", default=["faiss", "sklearn"])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.k, args.size, args.embed_texts, args.niter = 20_000, 50, 20_000, 300, 5
    results: dict = {"args": {k: v for k, v in vars(args).items()}, "cpus": os.cpu_count()}
    for part in args.parts:
        PARTS[part](args, results)
    if "kmeans" in args.parts:
        project(results, args)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "resample.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
