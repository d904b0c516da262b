"""Semantic resampling of brief actions (SPEC section 5) and the `action100m resample` command.

Dedup by exact text, embed the unique texts, k-means them, then draw with replacement a cluster,
a text in it and a segment with that text, each uniformly; written as a `resampled_k*` config."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from action100m_hf.files import write_atomic
from action100m_hf.errors import Action100MError, UnknownConfigError
from action100m_hf.data.schema import RESAMPLED_K, RESAMPLED_SCHEMA

if TYPE_CHECKING:
    from action100m_hf.resample.embeddings import SentenceEmbedder

logger = logging.getLogger(__name__)

#: What `cluster_size` counts in a resampled row.
CLUSTER_SIZE_MEANING = "number of unique brief-action texts in the cluster"
#: Columns of the brief_action config that a resampled row copies.
SEGMENT_COLUMNS = ("video_uid", "node_id", "start", "end", "duration", "text")
STATS_FILE = "resample_stats.json"


class ResampleInputError(Action100MError):
    """Input that resampling cannot use: no text column, texts that are not strings, a bad size."""


class EmptyInputError(ResampleInputError):
    """A source without a single usable brief action."""


# --- 1. dedup ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextGroups:
    """The unique texts of a text column and, for each, the input rows that carry it.

    Unique texts are sorted (so their order, and the embedding shards, do not depend on the order
    of the input). The rows of text `t` are `rows[offsets[t]:offsets[t + 1]]`, ascending.
    Null, empty and whitespace-only texts belong to no group; `dropped` counts them.
    """

    texts: pa.Array  # (n_unique,) string
    offsets: np.ndarray  # (n_unique + 1,) int64
    rows: np.ndarray  # (n_kept_rows,) int64 positions in the input
    dropped: int
    input_rows: int

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def stats(self, top: int = 10) -> dict:
        """Duplicate-group statistics as the paper reports them (groups of >= 2 identical texts)."""
        counts = self.counts
        duplicated = counts >= 2
        largest = np.argsort(-counts, kind="stable")[:top]
        return {
            "segments": int(counts.sum()),
            "unique_texts": len(counts),
            "duplicate_groups": int(duplicated.sum()),
            "segments_in_duplicate_groups": int(counts[duplicated].sum()),
            "singleton_texts": int((counts == 1).sum()),
            "dropped_empty_texts": self.dropped,
            "largest_groups": [
                {"text": self.texts[int(i)].as_py(), "segments": int(counts[i])} for i in largest
            ],
        }


def group_texts(texts: pa.Array | pa.ChunkedArray, source: str = "input") -> TextGroups:
    """Deduplicate `texts` by exact value with Arrow's hash kernels (no per-row Python)."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise ResampleInputError(f"{source}: the text column has type {texts.type}; brief actions must be strings")
    column = texts if isinstance(texts, pa.ChunkedArray) else pa.chunked_array([texts], type=texts.type)
    usable = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0), False)
    unique = pc.unique(column.filter(usable))
    unique = unique.take(pc.sort_indices(unique))
    text_of_row = pc.fill_null(pc.index_in(column, value_set=unique), -1).to_numpy()
    kept = np.flatnonzero(usable.to_numpy(zero_copy_only=False))
    kept_text = text_of_row[kept]
    order = np.argsort(kept_text, kind="stable")
    counts = np.bincount(kept_text, minlength=len(unique))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return TextGroups(
        texts=unique,
        offsets=offsets,
        rows=kept[order].astype(np.int64),
        dropped=len(column) - len(kept),
        input_rows=len(column),
    )


# --- 4. sampling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSample:
    """A resample: for each draw, the input row, its unique text, its cluster and cluster size."""

    rows: np.ndarray  # int64
    text_index: np.ndarray  # int64
    cluster_id: np.ndarray  # int32
    cluster_size: np.ndarray  # int32, unique texts in the cluster


def sample_over_clusters(labels: np.ndarray, groups: TextGroups, size: int, seed: int) -> ClusterSample:
    """Draw `size` rows with replacement: cluster, then unique text, then row, each uniformly.

    `labels[t]` is the cluster of unique text `t`; clusters without texts are never drawn.
    """
    if size < 1:
        raise ResampleInputError(f"sample size must be at least 1, got {size}")
    if len(labels) != len(groups.texts):
        raise ResampleInputError(f"{len(labels)} cluster labels for {len(groups.texts)} unique texts")
    rng = np.random.default_rng(seed)
    texts_by_cluster = np.argsort(labels, kind="stable")
    cluster_ids, cluster_starts, cluster_sizes = np.unique(
        labels[texts_by_cluster], return_index=True, return_counts=True
    )
    chosen = rng.integers(0, len(cluster_ids), size=size)
    text_index = texts_by_cluster[cluster_starts[chosen] + rng.integers(0, cluster_sizes[chosen])]
    counts = groups.counts[text_index]
    rows = groups.rows[groups.offsets[text_index] + rng.integers(0, counts)]
    return ClusterSample(
        rows=rows.astype(np.int64),
        text_index=text_index.astype(np.int64),
        cluster_id=cluster_ids[chosen].astype(np.int32),
        cluster_size=cluster_sizes[chosen].astype(np.int32),
    )


def take_rows(
    tables: Iterable[pa.Table | pa.RecordBatch], rows: np.ndarray, columns=SEGMENT_COLUMNS
) -> pa.Table:
    """`columns` of the rows at global positions `rows` of consecutive `tables`, in `rows` order.

    One pass over the tables, so the segments never need to be held in memory together.
    """
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    pieces, offset = [], 0
    for data in tables:
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        lo, hi = np.searchsorted(sorted_rows, [offset, offset + table.num_rows])
        if hi > lo:
            pieces.append(table.select(list(columns)).take(pa.array(sorted_rows[lo:hi] - offset)))
        offset += table.num_rows
    if len(rows) and (not pieces or sorted_rows[-1] >= offset):
        raise ResampleInputError(
            f"row {int(sorted_rows[-1])} requested but the input has {offset} rows "
            "(did the source change between the two passes?)"
        )
    gathered = pa.concat_tables(pieces) if pieces else pa.table({c: [] for c in columns})
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return gathered.take(pa.array(back))


def resampled_table(segments: pa.Table, sample: ClusterSample) -> pa.Table:
    """Rows of the `resampled_*` configs (schema.RESAMPLED_SCHEMA), in draw order."""
    return pa.table(
        {
            "sample_index": np.arange(len(sample.rows), dtype=np.int64),
            **{name: segments.column(name) for name in SEGMENT_COLUMNS},
            "cluster_id": sample.cluster_id,
            "cluster_size": sample.cluster_size,
        }
    ).cast(RESAMPLED_SCHEMA)


# --- the whole pass ------------------------------------------------------------------------


@dataclass
class ResampleResult:
    table: pa.Table
    stats: dict = field(default_factory=dict)


def resample_segments(
    segment_tables: Callable[[], Iterable[pa.Table]],
    *,
    k: int,
    size: int,
    embedder: SentenceEmbedder,
    work_dir: str | os.PathLike,
    seed: int = 0,
    backend: str = "auto",
    niter: int | None = None,
    restarts: int = 1,
    train_size: int | None = None,
    shard_size: int | None = None,
    progress: bool = False,
    source: str = "input",
) -> ResampleResult | None:
    """Dedup, embed, cluster and sample brief-action rows; `None` on accelerate ranks other than 0.

    `segment_tables()` must yield the same tables (brief_action rows: at least `SEGMENT_COLUMNS`)
    each time it is called: the text column is read in a first pass, the sampled rows are taken
    in a second one. Embeddings are cached under `work_dir` (see `embeddings.embed_texts`).
    """
    from action100m_hf.resample.embeddings import DEFAULT_SHARD_SIZE, current_rank, embed_texts
    from action100m_hf.resample.kmeans import DEFAULT_NITER, cluster_embeddings

    text_chunks = []
    for table in segment_tables():
        if "text" not in table.column_names:
            raise ResampleInputError(f"{source}: no 'text' column (columns: {', '.join(table.column_names)})")
        text_chunks.extend(table.column("text").chunks)
    if sum(len(chunk) for chunk in text_chunks) == 0:
        raise EmptyInputError(f"{source}: no brief actions (no segment with a text other than N/A)")
    groups = group_texts(pa.chunked_array(text_chunks, type=text_chunks[0].type), source)
    if len(groups.texts) == 0:
        raise EmptyInputError(
            f"{source}: no usable brief actions ({groups.dropped} rows, all with a null or empty text)"
        )
    if groups.dropped:
        logger.warning("%s: %d rows with a null or empty text are left out", source, groups.dropped)
    shards = embed_texts(
        groups.texts,
        embedder,
        work_dir,
        shard_size=shard_size or DEFAULT_SHARD_SIZE,
        progress=progress,
    )
    if current_rank().rank != 0:
        return None
    clusters = cluster_embeddings(
        shards,
        k,
        seed=seed,
        backend=backend,
        niter=niter or DEFAULT_NITER,
        restarts=restarts,
        train_size=train_size,
    )
    sample = sample_over_clusters(clusters.labels, groups, size, seed)
    segments = take_rows(segment_tables(), sample.rows)
    stats = {
        "source": source,
        "size": size,
        "seed": seed,
        "embedding_model": embedder.name,
        "k_requested": clusters.k_requested,
        "k_effective": clusters.k_effective,
        "nonempty_clusters": int(len(np.unique(clusters.labels))),
        "kmeans_backend": clusters.backend,
        "kmeans_train_size": clusters.train_size,
        "cluster_size": CLUSTER_SIZE_MEANING,
        "dedup": groups.stats(),
    }
    return ResampleResult(resampled_table(segments, sample), stats)


def brief_action_tables(source, batch_size: int = 64) -> Iterator[pa.Table]:
    """The brief_action rows (N/A left out) of every tree shard of `source`, batch by batch."""
    from action100m_hf.data.loading import iter_tree_batches
    from action100m_hf.data.views import flat_table

    for batch in iter_tree_batches(source, batch_size=batch_size):
        yield flat_table(batch, "brief_action")


def config_for_k(k: int) -> str:
    for config, config_k in RESAMPLED_K.items():
        if config_k == k:
            return config
    raise UnknownConfigError(
        f"no resampled config for k={k}; the resampled configs are "
        + ", ".join(f"{c} (k={v})" for c, v in RESAMPLED_K.items())
    )


def resample_into_folder(
    source, out: str | os.PathLike, *, k: int, size: int, embedder: SentenceEmbedder,
    work_dir: str | os.PathLike | None = None, **options,
) -> ResampleResult | None:  # fmt: skip
    """`resample_segments` over the brief actions of `source`, written as the `resampled_k*` config
    of the Hub-layout folder `out` with its `resample_stats.json`; the README's YAML is updated.

    Embeddings are cached under `work_dir` (default `out/_work/embeddings/<model>`). `options` go
    to `resample_segments`. Returns None on accelerate ranks other than 0.
    """
    from action100m_hf.data.layout import update_readme_configs, write_config

    config = config_for_k(k)
    out = Path(out)
    slug = embedder.name.replace("/", "--")
    work_dir = Path(work_dir) if work_dir else out / "_work" / "embeddings" / slug
    result = resample_segments(
        lambda: brief_action_tables(source), k=k, size=size, embedder=embedder, work_dir=work_dir,
        source=str(source), **options,
    )  # fmt: skip
    if result is None:
        return None
    result.stats["config"] = config
    write_config([result.table], out, config)
    write_atomic(out / config / STATS_FILE, json.dumps(result.stats, indent=2, ensure_ascii=False))
    update_readme_configs(out)
    return result
