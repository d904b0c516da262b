"""The dataset card (README.md) of any Hub-layout folder: YAML metadata, every config with its row
count, fields and first row, the provenance of the data, statistics and plots.

`write_card(folder)` needs nothing but the folder: statistics come from its `tree` config (cached in
`assets/stats.json` while the tree shards are unchanged), provenance from `provenance.card_settings`
(the release, `build/`, the previous card). The result is checked by `validate_card` (huggingface_hub's
`DatasetCard` parser and the `datasets` readers of its YAML, row counts against the Parquet footers)
before it replaces README.md; `action100m card FOLDER` is the command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from action100m_hf.data.layout import SHARD_GLOB, configs_present, configs_yaml
from action100m_hf.data.schema import (
    DEFAULT_CONFIG, FLAT_TEXT_FIELDS, RESAMPLED_CONFIGS, RESAMPLED_K, SPLIT, features_for, schema_for,
)  # fmt: skip
from action100m_hf.errors import Action100MError
from action100m_hf.hub.provenance import CardError, card_settings, save_settings
from action100m_hf.hub.stats import DatasetStats

__all__ = ["CardError", "card_command", "card_repo_id", "render_card", "validate_card", "write_card"]

#: The card's template (Jinja2, rendered by `huggingface_hub.DatasetCard.from_template`).
TEMPLATE = Path(__file__).resolve().parent / "templates" / "README.template.md"
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
REQUIRED_METADATA = ("license", "language", "task_categories", "tags", "size_categories",
                     "pretty_name", "configs", "dataset_info")
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_LOAD_EXAMPLE = re.compile(r'load_dataset\("([^"]+)"')


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


def _shards(folder: Path, config: str) -> list[Path]:
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
        for shard in _shards(folder, config):
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


def _card_configs(folder: Path) -> list[str]:
    configs = configs_present(folder)
    if not configs:
        raise CardError(f"folder {folder}: no config shards (<config>/{SHARD_GLOB}); nothing to describe")
    return configs


def expected_default(configs) -> str | None:
    """The config `load_dataset(repo)` loads without a name: brief_action, or the only config."""
    configs = list(configs)
    if DEFAULT_CONFIG in configs:
        return DEFAULT_CONFIG
    return configs[0] if len(configs) == 1 else None


def card_command(folder: str | Path, repo_id: str | None = None) -> str:
    """The command line that writes (or refreshes) the card of `folder`."""
    return f"action100m card {shlex.quote(str(folder))}" + (f" --repo-id {repo_id}" if repo_id else "")


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
    for shard in _shards(folder, config):
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
    files = _shards(folder, "tree") + [p for p in [folder / "build" / "errors.parquet"] if p.is_file()]
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
    return compute_stats([str(p) for p in _shards(folder, "tree")])


def _save_stats(folder: Path, stats: DatasetStats) -> None:
    path = folder / STATS_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"inputs": _stats_inputs(folder), "stats": stats.as_dict()}, indent=1) + "\n")
    os.replace(tmp, path)


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


def _stats_context(stats: DatasetStats | None) -> dict:
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


# --- rendering ----------------------------------------------------------------------------------


def _render(folder: Path, stats: DatasetStats | None, info: dict) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    from action100m_hf.hub.plots import PLOT_FILES

    configs = _card_configs(folder)
    infos = dataset_infos(folder, configs)
    rows = {c: infos[c].splits[SPLIT].num_examples for c in configs}
    default = expected_default(configs)
    main = default or configs[0]  # the config the card's loading example loads first
    # The Hub reads license_name and license_link only with license "other".
    custom_license = (
        {"license_name": info["license_name"], "license_link": info["license_link"]}
        if info["license"] == "other" else {}
    )
    card_data = DatasetCardData(
        license=info["license"],
        **custom_license,
        language=LANGUAGE,
        task_categories=TASK_CATEGORIES,
        tags=TAGS,
        size_categories=[size_category(rows[main])],
        pretty_name=info["pretty_name"],
        source_datasets=info["source_datasets"] or None,
        configs=configs_yaml(configs),
    )
    infos.to_dataset_card_data(card_data)
    settings = info["settings"]
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        description=info["description"],
        repo_id=info["repo_id"] or str(folder),
        tree_source=f"hf://datasets/{info['repo_id']}/tree" if info["repo_id"] else str(folder / "tree"),
        default_config=default,
        main_config=main,
        stream_example=next((c for c in configs if c != main), None),
        frames_config=next((c for c in (main, *configs) if c != "tree"), None),
        configs=[
            {"name": c, "default": c == default, "rows": f"{rows[c]:,}", "summary": CONFIG_SUMMARIES[c],
             "fields": field_rows(c), "example": example_json(folder, c),
             "resample": resample_note(folder, c) if c in RESAMPLED_CONFIGS else None}
            for c in configs
        ],
        build={
            "profile": info["profile"],
            "code_version": info["code_version"],
            "source": info["source"],
            "source_datasets": info["source_datasets"],
            "models": info["models"],
            "settings_yaml": settings.strip() if isinstance(settings, str)
            else yaml.safe_dump(settings, sort_keys=False).strip() if settings else "",
            "summary_json": json.dumps(preview(info["summary"], items=5), indent=2, ensure_ascii=False)
            if info["summary"] else "",
        },
        plots=PLOT_FILES,
        citation=CITATION,
        **_stats_context(stats),
    )
    return str(card)


def render_card(
    folder: str | Path, stats: DatasetStats | None = None, build_info: dict | None = None, *,
    repo_id: str | None = None, source: str | None = None,
) -> str:  # fmt: skip
    """The card's Markdown (YAML header included) for the configs present in `folder`; `stats` are
    those of its tree config (None: no statistics section). Writes nothing."""
    folder = Path(folder)
    return _render(folder, stats, card_settings(folder, build_info, repo_id=repo_id, source=source))


def card_repo_id(card) -> str | None:
    """The repository the card's loading examples name (`repo_id` of `write_card`)."""
    found = _LOAD_EXAMPLE.search(card.text)
    return found.group(1) if found else None


def validate_card(content: str, folder: str | Path | None = None):
    """Parse and check a card; returns the `huggingface_hub.DatasetCard` or raises `CardError`.

    Checks the YAML as the Hub's loaders read it: the required keys, `configs` (with
    `default: true` on brief_action when the folder has it) through `datasets`' `MetadataConfigs`,
    and `dataset_info` features equal to the contract of each config. With `folder`, also that the
    configs are the folder's, that row counts match the shards and that every linked image exists.
    """
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    where = f"card of {folder}" if folder is not None else "card"
    try:
        card = DatasetCard(content)
        metadata_configs = MetadataConfigs.from_dataset_card_data(card.data)
        infos = DatasetInfosDict.from_dataset_card_data(card.data)
        default = metadata_configs.get_default_config_name()
    except (ValueError, TypeError, KeyError, yaml.YAMLError) as e:
        raise CardError(f"{where}: unreadable metadata ({e})") from e

    problems = [f"missing metadata `{key}`" for key in REQUIRED_METADATA if not card.data.get(key)]
    if card.data.get("license") == "other":
        problems += [f"license `other` needs `{k}`" for k in ("license_name", "license_link")
                     if not card.data.get(k)]
    if metadata_configs and default != expected_default(metadata_configs):
        problems.append(f"default config is {default!r}, expected {expected_default(metadata_configs)!r}")
    if set(infos) != set(metadata_configs):
        problems.append(
            f"configs {sorted(metadata_configs)} and dataset_info configs {sorted(infos)} differ"
        )
    for config, info in infos.items():
        try:
            expected = features_for(config)
        except Action100MError as e:
            problems.append(str(e))
            continue
        if info.features != expected:
            problems.append(f"dataset_info features of {config} are not the contract's")

    if folder is not None:
        folder = Path(folder)
        present = configs_present(folder)
        if sorted(present) != sorted(metadata_configs):
            problems.append(f"card configs {sorted(metadata_configs)} but folder has {sorted(present)}")
        for config in set(present) & set(infos):
            written = sum(pq.ParquetFile(s).metadata.num_rows for s in _shards(folder, config))
            stated = infos[config].splits[SPLIT].num_examples if infos[config].splits else None
            if stated != written:
                problems.append(f"{config}: card says {stated} rows, shards hold {written}")
        for link in _IMAGE_LINK.findall(card.text):
            if "://" not in link and not (folder / link).is_file():
                problems.append(f"image {link} is linked but not in the folder")
    if problems:
        raise CardError(f"{where}: " + "; ".join(problems))
    return card


def write_card(
    folder: str | Path, build_info: dict | None = None, *, repo_id: str | None = None, source: str | None = None
) -> Path:
    """Write or refresh the validated README.md card of the Hub-layout folder `folder`.

    Needs nothing but the folder: every config present is described (rows, fields, first row),
    statistics and plots come from its tree config, provenance from `provenance.card_settings`
    (`repo_id`: the repository its examples load from; `source`: where the trees came from, the
    release's license and source fields when it names the release; `build_info`: any other
    setting of `provenance.DEFAULT_SETTINGS`). The settings are kept in `assets/card.yaml` for the
    next refresh. Nothing is replaced when the card does not validate.
    """
    from action100m_hf.hub.plots import PLOT_FILES, write_plots

    folder = Path(folder)
    configs = _card_configs(folder)
    dataset_infos(folder, configs)  # schemas are checked before the statistics are computed
    info = card_settings(folder, build_info, repo_id=repo_id, source=source)
    stats = tree_stats(folder)
    assets = folder / ASSETS_DIR
    written = {p.name for p in write_plots(stats, assets)} if stats is not None else set()
    for name in set(PLOT_FILES.values()) - written:  # plots of an earlier card that this one lacks
        (assets / name).unlink(missing_ok=True)
    content = _render(folder, stats, info)
    validate_card(content, folder)
    path = folder / "README.md"
    tmp = path.with_name(f".README.md.tmp-{os.getpid()}")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)
    save_settings(folder, info)
    if stats is not None:
        _save_stats(folder, stats)
    return path


def retarget_card(folder: str | Path, repo_id: str, *, write: bool = True) -> str:
    """The folder's card with examples that load `repo_id`, its other settings kept; written like
    `write_card` does, or (`write=False`) only rendered and validated."""
    folder = Path(folder)
    if write:
        return write_card(folder, repo_id=repo_id).read_text(encoding="utf-8")
    content = _render(folder, tree_stats(folder), card_settings(folder, repo_id=repo_id))
    validate_card(content, folder)
    return content


def describe_card(path: str | Path) -> str:
    """One line on a written card: its configs with their rows, where its examples load from."""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(path)
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    configs = ", ".join(f"{name} ({infos[name].splits[SPLIT].num_examples:,} rows)"
                        for name in MetadataConfigs.from_dataset_card_data(card.data))
    return f"wrote {path}: {configs}; its examples load {card_repo_id(card)!r}"
