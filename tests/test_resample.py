"""Semantic resampling: exact dedup counts, uniform draws over clusters, determinism, rows that
point to real segments, MiniLM clusters that make sense, resumable embedding shards, the CLI,
and bad input (empty, fewer texts than k, non-string and empty texts, a model that is absent)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from action100m_hf.data import layout

from action100m_hf.data import schema

from action100m_hf.data import views
from action100m_hf.cli import main as cli_main
from action100m_hf.resample.embeddings import (
    EmbeddingCacheError,
    RankInfo,
    embed_texts,
    load_embedder,
    shard_path,
)
from action100m_hf.errors import ModelNotAvailableError, UnknownConfigError
from action100m_hf.resample.kmeans import cluster_embeddings
from action100m_hf.resample.sampling import (
    CLUSTER_SIZE_MEANING,
    EmptyInputError,
    ResampleInputError,
    TextGroups,
    brief_action_tables,
    config_for_k,
    group_texts,
    resample_segments,
    sample_over_clusters,
)
from action100m_hf.data.tree import TreeNode, flatten

#: Brief actions of the three internal nodes (root, left, right) of each fixture video.
#: None: no annotation; "N/A": left out of brief_action; "" and " ": dropped by resampling.
FIXTURE_ACTIONS = {
    "vid_a": ["talk to the camera", "chop onions", "talk to the camera"],
    "vid_b": ["talk to the camera", "N/A", "stir soup"],
    "vid_c": ["chop onions", "", "pour water"],
    "vid_d": [" ", None, "stir soup"],
}


def _gpt(brief: str) -> dict:
    return {
        "summary": {"brief": "s", "detailed": "S."},
        "action": {"brief": brief, "detailed": f"{brief}.", "actor": "a person"},
    }


def video_row(video_uid: str, actions: list[str | None]) -> dict:
    """A 40 s video: root, two 20 s internal nodes, four 10 s leaves; internal nodes annotated."""
    root_action, left_action, right_action = actions

    def internal(start: float, brief: str | None) -> TreeNode:
        leaves = [TreeNode(start, start + 10.0), TreeNode(start + 10.0, start + 20.0)]
        return TreeNode(start, start + 20.0, leaves, fields={"gpt": _gpt(brief)} if brief is not None else {})

    root = TreeNode(0.0, 40.0, [internal(0.0, left_action), internal(20.0, right_action)],
                    fields={"gpt": _gpt(root_action)} if root_action is not None else {})
    return {"video_uid": video_uid, "metadata": None, "nodes": flatten(video_uid, root)}


def fixture_tree() -> pa.Table:
    return schema.tree_table([video_row(uid, actions) for uid, actions in FIXTURE_ACTIONS.items()])


def fixture_flat() -> pa.Table:
    return views.flat_table(fixture_tree(), "brief_action")


PARAPHRASES = [
    ["chop onions with a knife", "slice the onion using a knife", "cut an onion into pieces"],
    ["talk to the camera", "speak to camera", "address the camera directly"],
    ["ride a bicycle down the street", "cycle along the road on a bike", "pedal a bike outdoors"],
    ["pour water into a glass", "fill a glass with water", "pour water from a bottle into a cup"],
]


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("cpu")


# --- dedup ---------------------------------------------------------------------------------


def test_dedup_counts_exact_on_built_trees():
    flat = fixture_flat()
    groups = group_texts(flat.column("text"))
    assert groups.texts.to_pylist() == ["chop onions", "pour water", "stir soup", "talk to the camera"]
    assert groups.counts.tolist() == [2, 1, 2, 3]
    stats = groups.stats(top=2)
    assert {k: v for k, v in stats.items() if k != "largest_groups"} == {
        "segments": 8,
        "unique_texts": 4,
        "duplicate_groups": 3,
        "segments_in_duplicate_groups": 7,
        "singleton_texts": 1,
        "dropped_empty_texts": 2,
    }
    assert stats["largest_groups"] == [
        {"text": "talk to the camera", "segments": 3},
        {"text": "chop onions", "segments": 2},
    ]
    # The rows behind each unique text carry exactly that text, and together they are every
    # non-empty row once.
    texts = flat.column("text").to_pylist()
    for t, text in enumerate(groups.texts.to_pylist()):
        rows = groups.rows[groups.offsets[t] : groups.offsets[t + 1]]
        assert [texts[r] for r in rows] == [text] * groups.counts[t]
    assert sorted(groups.rows.tolist()) == [i for i, x in enumerate(texts) if x.strip()]


def test_dedup_rejects_non_string_texts():
    with pytest.raises(ResampleInputError, match=r"shard-7\.parquet: the text column has type int64"):
        group_texts(pa.array([1, 2, 2]), source="shard-7.parquet")


# --- sampling ------------------------------------------------------------------------------


def _synthetic_groups(segments_per_text: np.ndarray) -> TextGroups:
    offsets = np.concatenate([[0], np.cumsum(segments_per_text)]).astype(np.int64)
    texts = pa.array([f"t{i}" for i in range(len(segments_per_text))])
    return TextGroups(texts, offsets, np.arange(offsets[-1], dtype=np.int64), 0, int(offsets[-1]))


def test_draws_are_uniform_over_clusters_then_texts_then_segments():
    # Clusters of 1, 2, 10, 50 and 500 unique texts; text 0 (alone in cluster 0) has 3 segments.
    cluster_sizes = [1, 2, 10, 50, 500]
    labels = np.repeat(np.arange(5), cluster_sizes).astype(np.int32)
    segments_per_text = np.ones(len(labels), dtype=np.int64)
    segments_per_text[0] = 3
    groups = _synthetic_groups(segments_per_text)
    size = 50_000
    sample = sample_over_clusters(labels, groups, size, seed=0)

    # Each cluster count is Binomial(size, 1/5): allow 5 standard deviations.
    p = 1 / 5
    tolerance = 5 * math.sqrt(size * p * (1 - p))
    per_cluster = np.bincount(sample.cluster_id, minlength=5)
    assert np.all(np.abs(per_cluster - size * p) <= tolerance), per_cluster
    assert np.array_equal(labels[sample.text_index], sample.cluster_id)
    assert np.array_equal(np.asarray(cluster_sizes)[sample.cluster_id], sample.cluster_size)

    # Within the 500-text cluster, texts are uniform: chi-square with 499 degrees of freedom
    # (mean 499, sd sqrt(998)) below mean + 5 sd.
    in_big = sample.text_index[sample.cluster_id == 4]
    counts = np.bincount(in_big - 63, minlength=500)
    expected = len(in_big) / 500
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 499 + 5 * math.sqrt(2 * 499), chi2

    # The three segments of text 0 are uniform too.
    rows_of_text0 = sample.rows[sample.text_index == 0]
    seg_counts = np.bincount(rows_of_text0, minlength=3)
    n0, q = len(rows_of_text0), 1 / 3
    assert np.all(np.abs(seg_counts - n0 * q) <= 5 * math.sqrt(n0 * q * (1 - q))), seg_counts
    assert set(rows_of_text0.tolist()) == {0, 1, 2}


def test_empty_clusters_are_never_drawn():
    labels = np.array([7, 7, 2], dtype=np.int32)  # clusters 0, 1, 3..6 have no text
    sample = sample_over_clusters(labels, _synthetic_groups(np.ones(3, dtype=np.int64)), 1000, seed=3)
    assert set(sample.cluster_id.tolist()) == {2, 7}
    assert set(zip(sample.cluster_id.tolist(), sample.cluster_size.tolist())) == {(2, 1), (7, 2)}


def test_sample_size_must_be_positive():
    with pytest.raises(ResampleInputError, match="sample size must be at least 1, got 0"):
        sample_over_clusters(np.zeros(1, np.int32), _synthetic_groups(np.ones(1, np.int64)), 0, seed=0)


# --- the whole pass on the built fixture ---------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_same_seed_same_output_and_rows_point_to_segments(minilm, tmp_path, backend):
    flat = fixture_flat()

    def run(seed):
        return resample_segments(
            lambda: [flat.slice(0, 5), flat.slice(5)],  # two batches: global row positions
            k=2, size=200, embedder=minilm, work_dir=tmp_path / "emb", seed=seed, backend=backend,
        )

    first, again, other = run(0), run(0), run(1)
    assert first.table.equals(again.table)
    assert not first.table.equals(other.table)
    table = first.table
    assert table.schema == schema.RESAMPLED_SCHEMA
    assert table.column("sample_index").to_pylist() == list(range(200))

    segment_keys = {tuple(r.values()) for r in flat.select(
        ["video_uid", "node_id", "start", "end", "duration", "text"]).to_pylist()}
    drawn = table.select(["video_uid", "node_id", "start", "end", "duration", "text"]).to_pylist()
    assert {tuple(r.values()) for r in drawn} <= segment_keys
    # Every usable segment is reachable and gets drawn in 200 draws; empty texts never are.
    assert len({tuple(r.values()) for r in drawn}) == 8
    assert "" not in table.column("text").to_pylist()

    # cluster_size counts the unique texts of the cluster.
    texts_per_cluster: dict[int, set] = {}
    for row in table.to_pylist():
        texts_per_cluster.setdefault(row["cluster_id"], set()).add(row["text"])
    for row in table.to_pylist():
        assert row["cluster_size"] == len(texts_per_cluster[row["cluster_id"]])
    assert first.stats["k_effective"] == 2 and first.stats["kmeans_backend"] == backend
    assert first.stats["cluster_size"] == CLUSTER_SIZE_MEANING


def test_fewer_unique_texts_than_k_reduces_k(minilm, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="action100m_hf.resample.kmeans"):
        result = resample_segments(
            lambda: [fixture_flat()], k=1000, size=100, embedder=minilm, work_dir=tmp_path, seed=0,
        )
    assert "4 vectors for k=1000 requested; using k=4" in caplog.text
    assert (result.stats["k_requested"], result.stats["k_effective"]) == (1000, 4)
    assert set(result.table.column("cluster_size").to_pylist()) == {1}
    assert result.stats["nonempty_clusters"] == 4


def test_empty_input_is_a_clear_error(minilm, tmp_path):
    with pytest.raises(EmptyInputError, match=r"trees/: no brief actions"):
        resample_segments(lambda: [], k=10, size=5, embedder=minilm, work_dir=tmp_path, source="trees/")
    only_empty = pa.table({"text": pa.array(["", None, "  "], pa.string())})
    with pytest.raises(EmptyInputError, match=r"trees/: no usable brief actions \(3 rows, all with a null or empty text\)"):
        resample_segments(lambda: [only_empty], k=10, size=5, embedder=minilm, work_dir=tmp_path, source="trees/")


def test_unknown_k_names_the_resampled_configs():
    assert config_for_k(10_000) == "resampled_k1e4"
    with pytest.raises(UnknownConfigError, match="no resampled config for k=5.*resampled_k1e3 \\(k=1000\\)"):
        config_for_k(5)


# --- embeddings and clusters ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_minilm_paraphrases_share_a_cluster(minilm, tmp_path, backend):
    texts = [t for group in PARAPHRASES for t in group]
    shards = embed_texts(pa.array(texts), minilm, tmp_path, shard_size=5, progress=False)
    assert [s.shape for s in shards] == [(5, 384), (5, 384), (2, 384)]
    result = cluster_embeddings(shards, 4, seed=0, backend=backend, restarts=10)
    labels = result.labels.reshape(4, 3)
    assert all(len(set(row)) == 1 for row in labels.tolist()), labels
    assert len(set(labels[:, 0].tolist())) == 4, labels


def test_embedding_shards_resume_and_split_across_ranks(minilm, tmp_path):
    texts = pa.array(["a", "b", "c", "d", "e"])
    with pytest.raises(EmbeddingCacheError, match=r"embeddings-00000\.npy is missing"):
        embed_texts(texts, minilm, tmp_path, shard_size=2, progress=False, ranks=RankInfo(1, 2))
    assert [shard_path(tmp_path, i).exists() for i in range(3)] == [False, True, False]
    rank1_written = shard_path(tmp_path, 1).stat().st_mtime_ns
    shards = embed_texts(texts, minilm, tmp_path, shard_size=2, progress=False, ranks=RankInfo(0, 2))
    assert shard_path(tmp_path, 1).stat().st_mtime_ns == rank1_written  # reused, not recomputed
    full = np.concatenate(shards)
    assert np.allclose(full, minilm.encode(["a", "b", "c", "d", "e"]), atol=1e-5)

    shard_path(tmp_path, 2).unlink()
    again = embed_texts(texts, minilm, tmp_path, shard_size=2, progress=False)
    assert np.array_equal(np.concatenate(again), full)
    assert not list(tmp_path.glob(".*tmp*"))

    with pytest.raises(EmbeddingCacheError, match=rf"{tmp_path}.*texts: stored 5, now 4"):
        embed_texts(pa.array(["a", "b", "c", "d"]), minilm, tmp_path, shard_size=2, progress=False)


def test_paper_model_absent_names_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="google/embeddinggemma-300m"):
        load_embedder("paper")


# --- command line and real data ------------------------------------------------------------


def test_cli_writes_the_config_beside_the_others(tmp_path, capsys):
    src = tmp_path / "trees"
    src.mkdir()
    pq.write_table(fixture_tree(), src / "part-0.parquet")
    hub = layout.write_hub_folder(src, tmp_path / "hub", configs=("tree", "brief_action"))
    code = cli_main(["resample", str(hub), "--k", "1000", "--size", "30", "--out", str(hub),
                     "--model", "cpu", "--no-progress", "--seed", "4"])
    assert code == 0
    assert "resampled_k1e3: 30 rows from 8 segments, 4 unique texts" in capsys.readouterr().out
    table = pq.read_table(hub / "resampled_k1e3" / "train-00000-of-00001.parquet")
    assert table.schema.remove_metadata() == schema.RESAMPLED_SCHEMA
    assert table.num_rows == 30
    stats = json.loads((hub / "resampled_k1e3" / "resample_stats.json").read_text())
    assert (stats["k_requested"], stats["k_effective"], stats["config"]) == (1000, 4, "resampled_k1e3")
    assert layout.configs_present(hub) == ["tree", "brief_action", "resampled_k1e3"]
    readme = (hub / "README.md").read_text()
    for config in ("tree", "brief_action", "resampled_k1e3"):
        assert f"config_name: {config}" in readme and f"{config}/train-*.parquet" in readme
    assert (hub / "_work" / "embeddings" / "sentence-transformers--all-MiniLM-L6-v2" / "manifest.json").exists()


def test_cli_on_trees_without_brief_actions_names_the_source(tmp_path, capsys):
    path = tmp_path / "no-actions.parquet"
    pq.write_table(schema.tree_table([video_row("vid_x", [None, "N/A", None])]), path)
    code = cli_main(["resample", str(path), "--k", "1000", "--size", "5", "--out", str(tmp_path / "hub"),
                     "--model", "cpu", "--no-progress"])
    assert code == 1
    assert f"action100m resample: error: {path}: no brief actions" in capsys.readouterr().err
    assert not (tmp_path / "hub" / "resampled_k1e3").exists()


def test_official_sample_tree_shard(official_sample, minilm, tmp_path):
    path = tmp_path / "official.parquet"
    pq.write_table(schema.tree_table([official_sample]), path)
    briefs = [((n.get("gpt") or {}).get("action") or {}).get("brief") for n in official_sample["nodes"]]
    usable = [b for b in briefs if b is not None and b != schema.NA_TEXT and b.strip()]
    result = resample_segments(
        lambda: brief_action_tables(path), k=10, size=500, embedder=minilm, work_dir=tmp_path / "emb",
        seed=0, source=str(path),
    )
    assert result.stats["dedup"]["segments"] == len(usable)
    assert result.stats["dedup"]["unique_texts"] == len(set(usable))
    by_id = {n["node_id"]: n for n in official_sample["nodes"]}
    for row in result.table.to_pylist():
        node = by_id[row["node_id"]]
        assert row["video_uid"] == official_sample["video_uid"]
        assert row["text"] == node["gpt"]["action"]["brief"]
        assert row["start"] == pytest.approx(node["start"]) and row["end"] == pytest.approx(node["end"])
    assert result.stats["nonempty_clusters"] == 10
