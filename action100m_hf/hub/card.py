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
import re
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from action100m_hf.files import write_atomic
from action100m_hf.data.layout import SHARD_GLOB, configs_present, configs_yaml
from action100m_hf.data.schema import DEFAULT_CONFIG, RESAMPLED_CONFIGS, SPLIT, features_for
from action100m_hf.errors import Action100MError
from action100m_hf.hub.provenance import CardError, card_settings, save_settings
from action100m_hf.hub.card_sections import (
    ASSETS_DIR,
    CITATION,
    CONFIG_SUMMARIES,
    LANGUAGE,
    TAGS,
    TASK_CATEGORIES,
    dataset_infos,
    example_json,
    field_rows,
    preview,
    resample_note,
    save_stats,
    shards,
    size_category,
    stats_context,
    tree_stats,
)
from action100m_hf.hub.stats import DatasetStats

__all__ = ["CardError", "card_command", "card_repo_id", "render_card", "validate_card", "write_card"]

#: The card's template (Jinja2, rendered by `huggingface_hub.DatasetCard.from_template`).
TEMPLATE = Path(__file__).resolve().parent / "templates" / "README.template.md"
REQUIRED_METADATA = ("license", "language", "task_categories", "tags", "size_categories",
                     "pretty_name", "configs", "dataset_info")
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_LOAD_EXAMPLE = re.compile(r'load_dataset\("([^"]+)"')


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
        **stats_context(stats),
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
            written = sum(pq.ParquetFile(s).metadata.num_rows for s in shards(folder, config))
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
    path = write_atomic(folder / "README.md", content)
    save_settings(folder, info)
    if stats is not None:
        save_stats(folder, stats)
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
