"""The dataset card (README.md) of a Hub-layout folder: YAML metadata, documentation, statistics, plots.

`write_card(folder, build_info)` computes the statistics of the folder's `tree` config, writes
the plots into `folder/assets/`, renders `cards/README.template.md` and checks the result with
`validate_card` (huggingface_hub's `DatasetCard` parser plus the `datasets` readers of its YAML)
before writing it. Every number in the card comes from `stats.DatasetStats` or the Parquet footers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from action100m_hf.errors import Action100MError
from action100m_hf.data.layout import SHARD_GLOB, configs_present, configs_yaml
from action100m_hf.hub.plots import PLOT_FILES, write_plots
from action100m_hf.data.schema import DEFAULT_CONFIG, FLAT_TEXT_FIELDS, RESAMPLED_K, SPLIT, features_for, schema_for
from action100m_hf.hub.stats import DatasetStats, compute_stats

#: The card's template (Jinja2, rendered by `huggingface_hub.DatasetCard.from_template`).
TEMPLATE = Path(__file__).resolve().parent / "templates" / "README.template.md"
#: Folder of the plots inside a Hub-layout folder; the card links them relatively.
ASSETS_DIR = "assets"

CITATION = """@article{chen2026action100m,
  title   = {Action100M: A Large-scale Video Action Dataset},
  author  = {Chen, Delong and Kasarla, Tejaswi and Bang, Yejin and Shukor, Mustafa and
             Chung, Willy and Yu, Jade and Bolourchi, Allen and Moutakanni, Th{\\'e}o and
             Fung, Pascale},
  journal = {arXiv preprint arXiv:2601.10592},
  year    = {2026}
}"""

#: Settings of a build that the card reports; `write_card(build_info=...)` overrides any of them.
DEFAULT_BUILD_INFO: dict = {
    "pretty_name": "Action100M-format video action dataset",
    "description": (
        "Hierarchical, temporally localized action annotations of videos in the format of "
        "Action100M, built with the open `action100m-hf` toolkit."
    ),
    "repo_id": None,  # the Hub repository the card's examples load from; None: the folder's path
    "license": "other",
    "license_name": "fair-noncommercial-research-license",
    "license_link": "https://huggingface.co/datasets/facebook/action100m-preview",
    "profile": "not recorded",
    "models": {},  # stage or role -> model id
    "settings": {},  # the run's settings, shown as YAML
    "code_version": None,  # None: this package's version
    "source": "not recorded",  # where the videos came from
}

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


class CardError(Action100MError):
    """A dataset card, or the folder it describes, that fails validation; the message lists why."""


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
    if DEFAULT_CONFIG not in configs:
        raise CardError(f"folder {folder}: no {DEFAULT_CONFIG} shards; the card's default config must exist")
    return configs


def _build_info(build_info: dict | None, folder: Path) -> dict:
    unknown = sorted(set(build_info or {}) - set(DEFAULT_BUILD_INFO))
    if unknown:
        raise CardError(
            f"unknown build_info key(s) {', '.join(unknown)}; the keys are: {', '.join(DEFAULT_BUILD_INFO)}"
        )
    info = {**DEFAULT_BUILD_INFO, **(build_info or {})}
    if info["code_version"] is None:
        from action100m_hf import __version__

        info["code_version"] = f"action100m-hf {__version__}"
    info["repo_id"] = info["repo_id"] or str(folder)
    return info


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


def render_card(folder: str | Path, stats: DatasetStats, build_info: dict | None = None) -> str:
    """The card's Markdown (YAML header included) for the configs present in `folder`."""
    from huggingface_hub import DatasetCard, DatasetCardData

    folder = Path(folder)
    info = _build_info(build_info, folder)
    configs = _card_configs(folder)
    infos = dataset_infos(folder, configs)
    rows = {c: infos[c].splits[SPLIT].num_examples for c in configs}

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
        size_categories=[size_category(rows[DEFAULT_CONFIG])],
        pretty_name=info["pretty_name"],
        configs=configs_yaml(configs),
    )
    infos.to_dataset_card_data(card_data)
    others = [c for c in configs if c != DEFAULT_CONFIG]
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        description=info["description"],
        repo_id=info["repo_id"],
        default_config=DEFAULT_CONFIG,
        stream_example=others[0] if others else None,
        configs=[
            {"name": c, "default": c == DEFAULT_CONFIG, "rows": f"{rows[c]:,}",
             "summary": CONFIG_SUMMARIES[c], "fields": field_rows(c)}
            for c in configs
        ],
        build={
            "profile": info["profile"],
            "code_version": info["code_version"],
            "source": info["source"],
            "models": info["models"],
            "settings_yaml": (
                yaml.safe_dump(info["settings"], sort_keys=False).strip() if info["settings"] else ""
            ),
        },
        figures=_figures(stats),
        duration_rows=[
            {"name": name, "count": f"{n:,}", "share": _share(n, stats.segments)}
            for name, n in stats.duration_buckets.items()
        ],
        level_rows=[
            {"level": lvl, "segments": f"{n:,}", "videos": f"{stats.depth_counts.get(lvl, 0):,}"}
            for lvl, n in stats.level_counts.items()
        ],
        word_rows=[{"name": n, "words": f"{w:.2f}"} for n, w in stats.words_per_field.items()],
        verb_rows=[{"verb": v, "count": f"{n:,}"} for v, n in stats.top_verbs],
        plots=PLOT_FILES,
        example_uid=stats.example.video_uid if stats.example else None,
        citation=CITATION,
    )
    return str(card)


def card_repo_id(card) -> str | None:
    """The repository the card's loading examples name (`repo_id` of `write_card`)."""
    found = _LOAD_EXAMPLE.search(card.text)
    return found.group(1) if found else None


def validate_card(content: str, folder: str | Path | None = None):
    """Parse and check a card; returns the `huggingface_hub.DatasetCard` or raises `CardError`.

    Checks the YAML as the Hub's loaders read it: the required keys, `configs` (with
    `default: true` on brief_action) through `datasets`' `MetadataConfigs`, and `dataset_info`
    features equal to the contract of each config. With `folder`, also that the configs are the
    folder's, that row counts match the shards and that every linked image exists.
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
    if default != DEFAULT_CONFIG:
        problems.append(f"default config is {default!r}, expected {DEFAULT_CONFIG!r}")
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


def write_card(folder: str | Path, build_info: dict | None = None) -> Path:
    """Compute statistics and plots of `folder`'s tree config, then write a validated README.md."""
    folder = Path(folder)
    tree_shards = _shards(folder, "tree")
    if not tree_shards:
        raise CardError(
            f"folder {folder}: no tree shards under {folder / 'tree'}; the card's statistics need them"
        )
    dataset_infos(folder, _card_configs(folder))  # footers and settings are checked before the statistics
    _build_info(build_info, folder)
    stats = compute_stats([str(p) for p in tree_shards])
    write_plots(stats, folder / ASSETS_DIR)
    content = render_card(folder, stats, build_info)
    validate_card(content, folder)
    path = folder / "README.md"
    path.write_text(content, encoding="utf-8")
    return path
