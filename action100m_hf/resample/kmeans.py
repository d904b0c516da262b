"""k-means over embeddings that need not fit in memory (faiss, on GPU when present, or sklearn).

Centroids are trained on a seeded random sample; every vector is then assigned to its nearest
centroid in streaming batches read from the (memory-mapped) embedding shards."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from action100m_hf.errors import Action100MError

logger = logging.getLogger(__name__)

KMEANS_BACKENDS = ("auto", "faiss", "sklearn")
#: faiss warns below 39 training points per centroid; the sample gives each centroid 40.
TRAIN_POINTS_PER_CENTROID = 40
#: Vectors assigned per batch (a batch of d=768 float32 is 200 MB at this size).
ASSIGN_BATCH = 65_536
DEFAULT_NITER = 20
#: Largest batch x k distance block of the numpy assignment (256 M floats = 1 GiB).
MAX_DISTANCE_BLOCK = 1 << 28


class ClusteringError(Action100MError):
    """k-means cannot run on this input (no vectors, an unknown or missing backend)."""


@dataclass(frozen=True)
class KMeansResult:
    """Cluster of every vector, the centroids, and the k actually used.

    `k_effective` is smaller than `k_requested` when there are fewer vectors than clusters (it is
    then the number of vectors). Clusters left empty by k-means keep their id and get no vector.
    """

    labels: np.ndarray  # (n,) int32
    centroids: np.ndarray  # (k_effective, d) float32
    k_requested: int
    k_effective: int
    backend: str
    train_size: int


def resolve_backend(backend: str = "auto") -> str:
    if backend not in KMEANS_BACKENDS:
        raise ClusteringError(f"unknown k-means backend {backend!r}; choose one of {', '.join(KMEANS_BACKENDS)}")
    if backend == "sklearn":
        return backend
    try:
        import faiss  # noqa: F401
    except ImportError as e:
        if backend == "faiss":
            raise ClusteringError("k-means backend faiss: the package faiss (faiss-cpu or faiss-gpu) is not installed") from e
        return "sklearn"
    return "faiss"


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _shard_bounds(shards: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)


def gather_rows(shards: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Vectors at global positions `rows` (sorted ascending) from consecutive shards."""
    bounds = _shard_bounds(shards)
    parts = []
    for i, shard in enumerate(shards):
        lo, hi = np.searchsorted(rows, [bounds[i], bounds[i + 1]])
        if hi > lo:
            parts.append(np.asarray(shard[rows[lo:hi] - bounds[i]], dtype=np.float32))
    return np.concatenate(parts)


def iter_batches(shards: Sequence[np.ndarray], batch: int = ASSIGN_BATCH):
    for shard in shards:
        for start in range(0, len(shard), batch):
            yield np.ascontiguousarray(shard[start : start + batch], dtype=np.float32)


def train_centroids(
    train: np.ndarray, k: int, *, seed: int, backend: str, niter: int, restarts: int = 1
) -> np.ndarray:
    """Centroids of `train` (n >= k), deterministic for a given seed.

    `restarts` runs k-means from that many initialisations and keeps the lowest inertia (faiss
    initialises at random points, so small inputs may need a few; scikit-learn uses k-means++).
    """
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(
            train.shape[1],
            k,
            niter=niter,
            seed=seed,
            gpu=_faiss_gpus() > 0,
            nredo=restarts,
            verbose=False,
            # The caller already sampled; faiss must not subsample again.
            max_points_per_centroid=max(1, -(-len(train) // k)),
        )
        km.train(train)
        return np.asarray(km.centroids, dtype=np.float32)
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, max_iter=niter, n_init=restarts, batch_size=max(4096, k))
    km.fit(train)
    return np.asarray(km.cluster_centers_, dtype=np.float32)


def assign_clusters(
    shards: Sequence[np.ndarray], centroids: np.ndarray, *, backend: str, batch: int = ASSIGN_BATCH
) -> np.ndarray:
    """Nearest centroid (squared L2) of every vector, batch by batch; int32 labels."""
    n = int(sum(len(s) for s in shards))
    labels = np.empty(n, dtype=np.int32)
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        if _faiss_gpus() > 0:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(np.ascontiguousarray(centroids))

        def nearest(x: np.ndarray) -> np.ndarray:
            return index.search(x, 1)[1][:, 0]

    else:
        squared_norms = np.einsum("ij,ij->i", centroids, centroids)
        # The distance block of a batch is batch x k floats: keep it under MAX_DISTANCE_BLOCK.
        batch = max(1, min(batch, MAX_DISTANCE_BLOCK // len(centroids)))

        def nearest(x: np.ndarray) -> np.ndarray:
            # argmin ||x - c||^2 = argmin (||c||^2 - 2 x.c): one matrix product per batch.
            return np.argmin(squared_norms[None, :] - 2.0 * (x @ centroids.T), axis=1)

    done = 0
    for x in iter_batches(shards, batch):
        labels[done : done + len(x)] = nearest(x)
        done += len(x)
    return labels


def cluster_embeddings(
    shards: Sequence[np.ndarray],
    k: int,
    *,
    seed: int = 0,
    backend: str = "auto",
    niter: int = DEFAULT_NITER,
    restarts: int = 1,
    train_size: int | None = None,
    batch: int = ASSIGN_BATCH,
) -> KMeansResult:
    """k-means of all vectors in `shards` (consecutive (n_i, d) arrays, e.g. memory-mapped).

    Trains on `train_size` vectors drawn without replacement with `seed` (default: 40 per
    centroid, or all of them when fewer), then assigns all. With fewer vectors than `k`, k is
    reduced to the number of vectors, with a warning, and `k_effective` says so.
    """
    if k < 1:
        raise ClusteringError(f"k must be at least 1, got {k}")
    n = int(sum(len(s) for s in shards))
    if n == 0:
        raise ClusteringError("k-means: no vectors to cluster")
    backend = resolve_backend(backend)
    k_effective = min(k, n)
    if k_effective < k:
        logger.warning("k-means: %d vectors for k=%d requested; using k=%d (one cluster per vector)", n, k, n)
    size = min(n, train_size if train_size is not None else TRAIN_POINTS_PER_CENTROID * k_effective)
    size = max(size, k_effective)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if size == n else np.sort(rng.choice(n, size=size, replace=False))
    train = gather_rows(shards, rows)
    centroids = train_centroids(train, k_effective, seed=seed, backend=backend, niter=niter, restarts=restarts)
    del train
    labels = assign_clusters(shards, centroids, backend=backend, batch=batch)
    return KMeansResult(labels, centroids, k, k_effective, backend, size)
