"""What the dataset card says about a folder: the documentation of every config and field, its
first rows, and the statistics of its `tree` config (cached while the tree shards are unchanged).
`card.py` renders these into the README and checks it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from action100m_hf.files import write_atomic
from action100m_hf.data.layout import BUILD_ERRORS, SHARD_GLOB
from action100m_hf.data.schema import FLAT_TEXT_FIELDS, RESAMPLED_K, SPLIT, features_for, schema_for
from action100m_hf.hub.provenance import CardError
from action100m_hf.hub.stats import DatasetStats

#: Folder of the plots inside a Hub-layout folder; the card links them relatively.
ASSETS_DIR = "assets"
#: The statistics behind the card, with the tree shards they were computed from.
STATS_FILE = f"{ASSETS_DIR}/stats.json"
#: How much of a value the card's example rows show: list items, characters of a string.
EXAMPLE_ITEMS = 2
EXAMPLE_CHARS = 160

CITATION = """@article{chen2026action100m,
  title   = {Action100M: A Large-scale Video Action Dataset},
  author  = {Chen, Delong and Kasarla, Tejaswi and Bang, Yejin and Shukor, Mustafa and
             Chung, Willy and Yu, Jade and Bolourchi, Allen and Moutakanni, Th{\\'e}o and
             Fung, Pascale},
  journal = {arXiv preprint arXiv:2601.10592},
  year    = {2026}
}"""

LANGUAGE = ["en"]
TASK_CATEGORIES = ["video-text-to-text", "video-classification"]
TAGS = ["video", "action-recognition", "video-captioning", "temporal-segmentation",
        "hierarchical", "tree-of-captions", "action100m"]

#: What one row of each config is.
CONFIG_SUMMARIES = {
    "tree": "video: its metadata and its whole Tree-of-Captions (the released format)",
    "brief_action": "annotated segment that names an action: `gpt.action.brief` and the actor",
    "detailed_action": "annotated segment that names an action: `gpt.action.detailed` and the actor",
    "brief_caption": "annotated segment: `gpt.summary.brief`",
    "detailed_caption": "annotated segment: `gpt.summary.detailed`",
    "segments": "segment (every node of every tree) with all its text fields",
    **{
        name: f"draw of the semantic resampling of brief actions over k = {k:,} clusters"
        for name, k in RESAMPLED_K.items()
    },
}

#: Documentation of every field, by its path: `nodes.gpt.action.brief` is a field of a node.
FIELD_DOCS = {
    "video_uid": "YouTube id of the source video",
    "metadata": "video-level metadata",
    "metadata.title": "video title",
    "metadata.description": "video description",
    "metadata.view_count": "views when collected",
    "metadata.like_count": "likes when collected",
    "metadata.duration": "duration in whole seconds as listed (may differ from the root's `end`)",
    "metadata.upload_date": "upload date, YYYYMMDD",
    "metadata.transcript": "ASR transcript",
    "metadata.transcript.time": "time of the transcript line",
    "metadata.transcript.text": "text of the transcript line",
    "nodes": "the segments of the tree, breadth-first (by level, then start)",
    "nodes.node_id": 'uuid5(NAMESPACE_URL, "{video_uid}|{start:.6f}|{end:.6f}") of times rounded to 0.01 s',
    "nodes.parent_id": "node id of the parent segment; null for the root",
    "nodes.level": "depth in the tree, root = 0",
    "nodes.start": "start of the segment in the video, seconds",
    "nodes.end": "end of the segment in the video, seconds",
    "nodes.plm_action": "short action label by the video captioner (PerceptionLM in the paper)",
    "nodes.plm_caption": "caption of 32 frames of the segment (PerceptionLM in the paper)",
    "nodes.llama3_caption": "caption of the middle frame, leaves only (Llama-3.2-Vision in the paper)",
    "nodes.gpt": "structured annotation of internal segments of at least 4 s; null elsewhere",
    "nodes.gpt.summary": "summaries of the segment",
    "nodes.gpt.summary.brief": "one-sentence summary",
    "nodes.gpt.summary.detailed": "detailed summary",
    "nodes.gpt.action": "the action of the segment",
    "nodes.gpt.action.brief": 'short verb phrase naming the action; "N/A" without a visible action',
    "nodes.gpt.action.detailed": "one imperative sentence on how the action is done",
    "nodes.gpt.action.actor": "who or what performs the action (noun phrase)",
    "node_id": "id of the segment in the `tree` config",
    "parent_id": "id of the parent segment; null for the root",
    "level": "depth in the tree, root = 0",
    "start": "start of the segment in the video, seconds",
    "end": "end of the segment in the video, seconds",
    "duration": "`end - start`, seconds",
    "sample_index": "position of the draw in the resampled sequence",
    "text": "the brief action drawn",
    "cluster_id": "k-means cluster of the brief action's embedding",
    "cluster_size": "unique brief actions in that cluster",
}

#: The Hub's size categories: (upper bound of rows, label).
SIZE_CATEGORIES = [
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
]

def size_category(rows: int) -> str:
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>10B"


def field_rows(config: str) -> list[dict]:
    """(name, type, doc) of every field of `config`, nested fields by their dotted path."""
    rows: list[dict] = []
    flat_docs = {
        name: f"`{'.'.join(path)}` of the segment: " + FIELD_DOCS["nodes." + ".".join(path)]
        for name, path in FLAT_TEXT_FIELDS.get(config, [])
    }

    def visit(name: str, dtype: pa.DataType) -> None:
        doc = flat_docs.get(name) or FIELD_DOCS.get(name)
        if doc is None:
            raise CardError(f"config {config}: field {name} has no documentation in card.FIELD_DOCS")
        inner = dtype.value_type if pa.types.is_list(dtype) else dtype
        rows.append({"name": name, "type": _type_name(dtype), "doc": doc.replace("|", "\\|")})
        if pa.types.is_struct(inner):
            for child in inner:
                visit(f"{name}.{child.name}", child.type)

    for f in schema_for(config):
        visit(f.name, f.type)
    return rows


def _type_name(dtype: pa.DataType) -> str:
    """The type as the card shows it: containers by kind, scalars as `datasets` names them."""
    if pa.types.is_list(dtype):
        return "list"
    if pa.types.is_struct(dtype):
        return "struct"
    return "float32" if pa.types.is_float32(dtype) else str(dtype)


def shards(folder: Path, config: str) -> list[Path]:
    return sorted((folder / config).glob(SHARD_GLOB))


def dataset_infos(folder: str | Path, configs: list[str]):
    """`datasets.DatasetInfosDict` of `configs` from their Parquet footers (rows, bytes, features).

    A shard whose schema is not the config's contract raises `CardError`: the card's features
    would not describe it.
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict

    folder = Path(folder)
    infos = DatasetInfosDict()
    for config in configs:
        rows = num_bytes = download = 0
        for shard in shards(folder, config):
            meta = pq.ParquetFile(shard).metadata
            if not meta.schema.to_arrow_schema().equals(schema_for(config)):
                raise CardError(f"shard {shard}: its schema is not the {config} config's schema")
            rows += meta.num_rows
            num_bytes += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            download += shard.stat().st_size
        splits = SplitDict()
        splits.add(SplitInfo(name=SPLIT, num_bytes=num_bytes, num_examples=rows))
        infos[config] = DatasetInfo(
            features=features_for(config), splits=splits, download_size=download, dataset_size=num_bytes
        )
    return infos


# --- example rows -----------------------------------------------------------------------------


def preview(value, items: int = EXAMPLE_ITEMS, chars: int = EXAMPLE_CHARS):
    """`value` shortened for the card: lists to `items` entries and a count of the rest, strings to
    `chars` characters, floats to 4 decimals (float32 times read back as 0.4, not 0.4000000059)."""
    if isinstance(value, dict):
        return {k: preview(v, items, chars) for k, v in value.items()}
    if isinstance(value, list):
        shown = [preview(v, items, chars) for v in value[:items]]
        return shown + ([f"… {len(value) - items:,} more"] if len(value) > items else [])
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        value = re.sub("`{3,}", "'''", value)  # a fence inside a value would end the card's code block
        return value if len(value) <= chars else value[:chars] + f"… ({len(value):,} characters)"
    return value


def first_row(folder: Path, config: str) -> dict | None:
    """The first row of the config's first non-empty shard, as the Hub's viewer shows it first."""
    for shard in shards(folder, config):
        handle = pq.ParquetFile(shard)
        for batch in handle.iter_batches(batch_size=1):
            if batch.num_rows:
                return batch.to_pylist()[0]
    return None


def example_json(folder: Path, config: str) -> str | None:
    row = first_row(folder, config)
    return None if row is None else json.dumps(preview(row), indent=2, ensure_ascii=False)


def resample_note(folder: Path, config: str) -> str | None:
    """How a resampled config was drawn, from its `resample_stats.json`."""
    from action100m_hf.resample.sampling import STATS_FILE as RESAMPLE_STATS_FILE

    path = folder / config / RESAMPLE_STATS_FILE
    if not path.is_file():
        return None
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
        dedup = s.get("dedup", {})
        return (
            f"{s['size']:,} draws (seed {s['seed']}) over k = {s['k_effective']:,} k-means clusters "
            f"(requested {s['k_requested']:,}) of `{s['embedding_model']}` embeddings of "
            f"{dedup.get('unique_texts', 0):,} unique brief actions from {dedup.get('segments', 0):,} segments"
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CardError(f"{path}: unreadable resampling statistics ({e})") from e


# --- statistics ---------------------------------------------------------------------------------


def _stats_inputs(folder: Path) -> list[list]:
    """What the statistics depend on: the tree shards and the build's errors (name, size, mtime)."""
    files = shards(folder, "tree") + [p for p in [folder / BUILD_ERRORS] if p.is_file()]
    return [[p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def tree_stats(folder: Path) -> DatasetStats | None:
    """The statistics of the folder's tree config (None without one), from `assets/stats.json`
    while the tree shards are those it was computed from, else computed again."""
    from action100m_hf.hub.stats import compute_stats

    inputs = _stats_inputs(folder)
    if not any(name.startswith("tree/") for name, _, _ in inputs):
        return None
    cache = folder / STATS_FILE
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
            if saved.get("inputs") == inputs:
                return DatasetStats.from_dict(saved["stats"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable cache is computed again
    return compute_stats([str(p) for p in shards(folder, "tree")])


def save_stats(folder: Path, stats: DatasetStats) -> None:
    write_atomic(folder / STATS_FILE, json.dumps({"inputs": _stats_inputs(folder), "stats": stats.as_dict()}, indent=1) + "\n")


def _figures(stats: DatasetStats) -> dict:
    return {
        "videos": f"{stats.videos:,}",
        "hours": f"{stats.hours:,.2f}",
        "segments": f"{stats.segments:,}",
        "leaves": f"{stats.leaves:,}",
        "annotated_segments": f"{stats.annotated_segments:,}",
        "na_segments": f"{stats.na_segments:,}",
        "na_rate": f"{100 * stats.na_rate:.2f} %",
        "total_words": f"{stats.total_words:,}",
    }


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.2f} %" if total else "-"


def stats_context(stats: DatasetStats | None) -> dict:
    if stats is None:
        return {"figures": None}
    return {
        "figures": _figures(stats),
        "duration_rows": [
            {"name": name, "count": f"{n:,}", "share": _share(n, stats.segments)}
            for name, n in stats.duration_buckets.items()
        ],
        "level_rows": [
            {"level": lvl, "segments": f"{n:,}", "videos": f"{stats.depth_counts.get(lvl, 0):,}"}
            for lvl, n in stats.level_counts.items()
        ],
        "word_rows": [{"name": n, "words": f"{w:.2f}"} for n, w in stats.words_per_field.items()],
        "verb_rows": [{"verb": v, "count": f"{n:,}"} for v, n in stats.top_verbs],
        "example_uid": stats.example.video_uid if stats.example else None,
    }


