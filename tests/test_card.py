"""The dataset card: valid YAML for the Hub and `datasets`, and numbers equal to an independent recount."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from action100m_hf.data import layout

from action100m_hf.data import schema

from action100m_hf.data import views
import action100m_hf
from action100m_hf.cli import main as cli_main
from action100m_hf.hub.card import CardError, render_card, validate_card, write_card
from action100m_hf.hub.card_sections import field_rows
from action100m_hf.hub.plots import PLOT_FILES
from action100m_hf.hub.stats import compute_stats

from conftest import expected_rows, hub_folder_of, random_tree_rows, reference_stats

BUILD_INFO = {
    "repo_id": "someone/action100m-mini",
    "pretty_name": "Action100M mini",
    "profile": "tiny",
    "models": {"segmentation": "facebook/vjepa2-vitg-fpc64-384", "annotation": "openai/gpt-oss-120b"},
    "settings": {"caption": {"num_frames": 32, "max_new_tokens": 1024}, "annotation": {"rounds": 3}},
    "code_version": "action100m-hf 0.1.0 (abc1234)",
    "source": "9 synthetic videos",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rows = random_tree_rows(9, seed=7)
    folder = hub_folder_of(rows, tmp_path_factory, "mini")
    path = write_card(folder, BUILD_INFO)
    return folder, rows, path.read_text()


def test_card_yaml_is_what_the_hub_and_datasets_read(built):
    folder, rows, text = built
    card = DatasetCard(text)
    data = card.data
    assert data.license == "other" and data.license_name == "fair-noncommercial-research-license"
    assert data.language == ["en"] and data.pretty_name == "Action100M mini"
    assert "video-text-to-text" in data.task_categories and "action100m" in data.tags
    assert data.size_categories == ["n<1K"]
    configs = MetadataConfigs.from_dataset_card_data(data)
    assert list(configs) == ["tree", *schema.FLAT_CONFIGS]
    assert configs.get_default_config_name() == "brief_action"
    assert configs["tree"]["data_files"] == [{"split": "train", "path": "tree/train-*.parquet"}]
    infos = DatasetInfosDict.from_dataset_card_data(data)
    counts = expected_rows(rows)
    for config in configs:
        assert infos[config].features == schema.features_for(config)
        assert infos[config].splits["train"].num_examples == counts[config]
        shards = list((folder / config).glob("train-*.parquet"))
        assert infos[config].download_size == sum(p.stat().st_size for p in shards)


def test_card_numbers_equal_independent_recount(built):
    folder, rows, text = built
    ref = reference_stats(rows)
    counts = expected_rows(rows)
    expected_lines = [
        f"| videos | {ref['videos']:,} |",
        f"| hours of video | {ref['seconds'] / 3600:,.2f} |",
        f"| segments | {ref['segments']:,} |",
        f"| leaf segments | {ref['leaves']:,} |",
        f"| annotated segments (`gpt`) | {ref['annotated_segments']:,} |",
        f'| annotated segments with `action.brief == "N/A"` | {ref["na_segments"]:,} '
        f"({100 * ref['na_segments'] / ref['annotated_segments']:.2f} %) |",
        f"| words in all text fields | {ref['total_words']:,} |",
        f"| `brief_action` (default) | {counts['brief_action']:,} |",
        f"| `segments` | {counts['segments']:,} |",
    ]
    for name, n in ref["duration_buckets"].items():
        expected_lines.append(f"| {name} | {n:,} | {100 * n / ref['segments']:.2f} % |")
    for level, n in ref["level_counts"].items():
        expected_lines.append(f"| {level} | {n:,} | {ref['depth_counts'].get(level, 0):,} |")
    for name, words in ref["words_per_field"].items():
        expected_lines.append(f"| `{name}` | {words:.2f} |")
    top = sorted(ref["verbs"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    expected_lines += [f"| {verb} | {n:,} |" for verb, n in top]
    for line in expected_lines:
        assert line in text, line


def test_card_documents_build_plots_license_and_citation(built):
    folder, rows, text = built
    for piece in ("| profile | tiny |", "| toolkit | action100m-hf 0.1.0 (abc1234) |",
                  "| segmentation | `facebook/vjepa2-vitg-fpc64-384` |", "  num_frames: 32",
                  'load_dataset("someone/action100m-mini", "tree", split="train", streaming=True)',
                  "FAIR Noncommercial Research License", "arXiv:2601.10592",
                  f"Tree of video {rows[0]['video_uid']}"):
        assert piece in text, piece
    for name in PLOT_FILES.values():
        assert f"](assets/{name})" in text
        assert (folder / "assets" / name).read_bytes()[:4] == b"\x89PNG"
    for config in ("tree", *schema.FLAT_CONFIGS):
        for field in field_rows(config):
            assert f"| `{field['name']}` |" in text


def test_every_field_of_every_config_is_documented():
    for config in schema.CONFIG_NAMES:
        names = [f["name"] for f in field_rows(config)]
        assert [n for n in names if "." not in n] == schema.schema_for(config).names
        assert all(f["doc"] for f in field_rows(config))


def test_official_sample_card(official_sample, tmp_path):
    pq.write_table(schema.tree_table([official_sample]), tmp_path / "sample.parquet")
    folder = layout.write_hub_folder(tmp_path / "sample.parquet", tmp_path / "hub", ["tree", "brief_action"])
    stats = compute_stats(folder)
    text = render_card(folder, stats, {"repo_id": "x/y"})
    validate_card(text)
    assert "| segments | 917 |" in text and '| 5 (1.91 %) |' in text
    assert "| `brief_action` (default) | 257 |" in text


# --- refusals -----------------------------------------------------------------------------------


def _copy(built, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(built[0], folder)
    return folder


def test_unknown_setting_is_refused_and_card_kept(built, tmp_path):
    folder = _copy(built, tmp_path)
    before = (folder / "README.md").read_text()
    with pytest.raises(CardError, match="unknown card setting\\(s\\) licence; the settings are: pretty_name"):
        write_card(folder, {"licence": "mit"})
    assert (folder / "README.md").read_text() == before


def test_shard_with_wrong_schema_is_named(built, tmp_path):
    folder = _copy(built, tmp_path)
    shard = next((folder / "segments").glob("train-*.parquet"))
    table = views.flat_table(schema.tree_table(random_tree_rows(1)), "segments").drop_columns(["actor"])
    pq.write_table(table, shard)
    with pytest.raises(CardError, match=f"shard {shard}: its schema is not the segments config's"):
        write_card(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda y: y.replace("  default: true\n", ""), "default config is None, expected 'brief_action'"),
        (lambda y: y.replace("license_name: fair-noncommercial-research-license\n", ""), "needs `license_name`"),
        (lambda y: y.replace("    dtype: int16", "    dtype: int32", 1), "features of brief_action"),
        (lambda y: y.replace("pretty_name: Action100M mini\n", ""), "missing metadata `pretty_name`"),
        (lambda y: y.replace("num_examples: ", "num_examples: 1", 1), "card says 1"),
    ],
)
def test_validation_names_the_problem(built, edit, message):
    folder, _, text = built
    header, body = text.split("\n---\n", 1)
    with pytest.raises(CardError, match=message):
        validate_card(edit(header) + "\n---\n" + body, folder)


def test_validation_checks_configs_and_images_against_folder(built, tmp_path):
    folder = _copy(built, tmp_path)
    text = (folder / "README.md").read_text()
    (folder / "assets" / PLOT_FILES["verbs"]).unlink()
    with pytest.raises(CardError, match=f"image assets/{PLOT_FILES['verbs']} is linked but not in the folder"):
        validate_card(text, folder)
    shutil.rmtree(folder / "detailed_caption")
    with pytest.raises(CardError, match="but folder has"):
        validate_card(text, folder)


def test_unreadable_yaml_is_a_card_error():
    with pytest.raises(CardError, match="unreadable metadata"):
        validate_card("---\nconfigs: 3\n---\n# x\n")
    with pytest.raises(CardError, match="missing metadata `license`"):
        validate_card("---\npretty_name: x\n---\n# x\n")


# --- every config in the text, with its rows and first row -------------------------------------


def _json_block(text: str, config: str):
    """The first-row JSON the card shows under the config's heading."""
    section = text.split(f"### `{config}`\n", 1)[1]
    return json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])


def _shown(card_value, value) -> bool:
    """The card shows `value` itself, or its start when it is long."""
    if isinstance(value, str) and len(value) > 160:
        return card_value == value[:160] + f"… ({len(value):,} characters)"
    if isinstance(value, float):
        return card_value == pytest.approx(value, abs=1e-4)
    return card_value == value


def resampled_table(rows: list[dict], draws: int) -> pa.Table:
    """A `resampled_k1e3` table drawn (deterministically) from the brief actions of `rows`."""
    actions = views.flat_table(schema.tree_table(rows), "brief_action").to_pylist()
    picked = [actions[(7 * i) % len(actions)] for i in range(draws)]
    return pa.Table.from_pylist(
        [{"sample_index": i, **{k: a[k] for k in ("video_uid", "node_id", "start", "end", "duration", "text")},
          "cluster_id": i % 3, "cluster_size": 2} for i, a in enumerate(picked)],
        schema=schema.RESAMPLED_SCHEMA,
    )


def test_every_config_shows_its_rows_and_first_row_resampled_included(built, tmp_path):
    folder = _copy(built, tmp_path)
    rows = built[1]
    layout.write_config([resampled_table(rows, 40)], folder, "resampled_k1e3")
    (folder / "resampled_k1e3" / "resample_stats.json").write_text(json.dumps({
        "size": 40, "seed": 3, "k_requested": 1000, "k_effective": 12, "embedding_model": "my/embedder",
        "dedup": {"unique_texts": 12, "segments": 30}}))
    text = write_card(folder).read_text()
    counts = {**expected_rows(rows), "resampled_k1e3": 40}
    for config in ("tree", *schema.FLAT_CONFIGS, "resampled_k1e3"):
        assert f"| `{config}`{' (default)' if config == 'brief_action' else ''} | {counts[config]:,} |" in text
        assert f"### `{config}`\n\n{counts[config]:,} rows, one per " in text
        first = pq.read_table(sorted((folder / config).glob("train-*.parquet"))[0]).slice(0, 1).to_pylist()[0]
        shown = _json_block(text, config)
        if config == "tree":
            assert shown["video_uid"] == first["video_uid"] == rows[0]["video_uid"]
            assert shown["nodes"][2] == f"… {len(first['nodes']) - 2:,} more"
            assert [n["node_id"] for n in shown["nodes"][:2]] == [n["node_id"] for n in first["nodes"][:2]]
            assert _shown(shown["nodes"][0]["plm_caption"], first["nodes"][0]["plm_caption"])
        else:
            assert list(shown) == list(first) and all(_shown(shown[k], v) for k, v in first.items()), config
    assert ("`resampled_k1e3`: 40 draws (seed 3) over k = 12 k-means clusters (requested 1,000) of "
            "`my/embedder` embeddings of 12 unique brief actions from 30 segments.") in text
    assert 'resampled_k1e3 = load_dataset("someone/action100m-mini", "resampled_k1e3", split="train", streaming=True)' in text


@pytest.mark.slow
def test_resample_command_refreshes_the_card(tmp_path, capsys):
    rows = random_tree_rows(4, seed=8)
    pq.write_table(schema.tree_table(rows), tmp_path / "trees.parquet")
    hub = tmp_path / "hub"
    assert cli_main(["flatten", str(tmp_path / "trees.parquet"), str(hub), "--configs", "tree,brief_action"]) == 0
    assert cli_main(["resample", str(hub), "--k", "1000", "--size", "25", "--out", str(hub),
                     "--model", "cpu", "--no-progress", "--seed", "2"]) == 0
    assert "resampled_k1e3 (25 rows)" in capsys.readouterr().out
    text = (hub / "README.md").read_text()
    stats = json.loads((hub / "resampled_k1e3" / "resample_stats.json").read_text())
    assert "| `resampled_k1e3` | 25 |" in text and "### `resampled_k1e3`\n\n25 rows" in text
    assert (f"`resampled_k1e3`: 25 draws (seed 2) over k = {stats['k_effective']:,} k-means clusters "
            f"(requested 1,000) of `{stats['embedding_model']}` embeddings") in text
    assert _json_block(text, "resampled_k1e3")["sample_index"] == 0
    assert f"| source | {tmp_path / 'trees.parquet'} |" in text  # resampling the folder's own trees keeps it


# --- provenance --------------------------------------------------------------------------------

RELEASE_GLOB = "hf://datasets/facebook/action100m-preview/data/*.parquet"


def test_release_provenance_is_kept_across_refreshes(built, tmp_path):
    folder = _copy(built, tmp_path)
    write_card(folder, source=RELEASE_GLOB)
    for refresh in ({}, {"source": str(folder / "tree")}):  # a later card; flattening in place
        text = write_card(folder, **refresh).read_text()
        data = DatasetCard(text).data
        assert data.source_datasets == ["facebook/action100m-preview"]
        assert (data.license, data.license_name) == ("other", "fair-noncommercial-research-license")
        assert (f"| source | the official Action100M release (facebook/action100m-preview), read from "
                f"{RELEASE_GLOB} |") in text
        assert "| structured annotation, 3 rounds of Self-Refine (stage aggregate) | `openai/gpt-oss-120b` |" in text
        assert 'load_dataset("someone/action100m-mini", split="train")' in text  # repo id kept too
    assert yaml.safe_load((folder / "assets" / "card.yaml").read_text())["source_datasets"] == [
        "facebook/action100m-preview"]


PROFILE_YAML = """\
name: tiny
description: >-
  Tiny seeded random models of the paper's architectures.
segment:
  encoder: vjepa2
  model: tiny            # a seeded random V-JEPA 2
caption:
  plm_model: tiny
  llama_model: tiny
  num_frames: 8
aggregate:
  backend: transformers
  model: tiny
  rounds: 3
run:
  seed: 0
"""


def test_build_profile_and_summary_are_shown(built, tmp_path):
    folder = _copy(built, tmp_path)
    (folder / "assets" / "card.yaml").unlink()
    (folder / "build").mkdir()
    (folder / "build" / "profile.yaml").write_text(PROFILE_YAML)
    summary = {"profile": "tiny", "stages": ["segment", "caption", "aggregate"], "videos": 7, "nodes": 260,
               "seconds": {"segment": 28.9, "caption": 67.7, "aggregate": 127.1}}
    (folder / "build" / "summary.json").write_text(json.dumps(summary))
    text = write_card(folder).read_text()
    assert "| profile | tiny: Tiny seeded random models of the paper's architectures. |" in text
    assert "Settings of the run:\n\n```yaml\n" + PROFILE_YAML.strip() + "\n```" in text
    stand_in = "`tiny (a seeded random stand-in model)`"
    for role in ("segmentation encoder (stage segment)", "segment captions (stage caption)",
                 "leaf captions from the middle frame (stage caption)"):
        assert f"| {role} | {stand_in} |" in text
    assert "| structured annotation (stage aggregate) | `tiny (a seeded random stand-in model), backend transformers` |" in text
    assert "| source | 7 videos given to the build |" in text
    shown = json.loads(text.split("(`build/summary.json`, long lists shortened):\n\n```json\n", 1)[1].split("\n```")[0])
    assert shown == summary
    inputs = [f"videos/v{i}.mp4" for i in range(7)]  # a summary naming its inputs: the first five shown
    (folder / "build" / "summary.json").write_text(json.dumps({**summary, "inputs": inputs}))
    text = write_card(folder).read_text()
    assert "| source | 7 input(s) of the build: videos/v0.mp4, videos/v1.mp4, videos/v2.mp4, videos/v3.mp4, videos/v4.mp4 … |" in text
    assert '"videos/v4.mp4",\n    "… 2 more"' in text


def test_paper_profile_names_the_paper_models(built, tmp_path):
    folder = _copy(built, tmp_path)
    (folder / "build").mkdir()
    shutil.copy(Path(action100m_hf.__file__).parent / "build" / "profiles" / "paper.yaml", folder / "build" / "profile.yaml")
    text = write_card(folder).read_text()
    assert "| segmentation encoder (stage segment) | `facebook/vjepa2-vitg-fpc64-384` |" in text
    assert "| segment captions (stage caption) | `facebook/Perception-LM-3B` |" in text
    assert "| structured annotation (stage aggregate) | `openai/gpt-oss-120b, backend vllm` |" in text


# --- any Hub-layout folder -----------------------------------------------------------------------


def test_folder_without_tree_or_default_config(built, tmp_path):
    folder = _copy(built, tmp_path)
    shutil.rmtree(folder / "brief_action")
    text = write_card(folder).read_text()
    configs = MetadataConfigs.from_dataset_card_data(DatasetCard(text).data)
    assert configs.get_default_config_name() is None and "(default)" not in text
    assert 'tree = load_dataset("someone/action100m-mini", "tree", split="train")\n' in text
    for config in ("tree", "brief_caption", "detailed_caption", "segments"):
        shutil.rmtree(folder / config)
    text = write_card(folder).read_text()  # one flat config left: no tree, no statistics
    assert MetadataConfigs.from_dataset_card_data(DatasetCard(text).data).get_default_config_name() == "detailed_action"
    assert "The folder has no `tree` config, from which the statistics are computed." in text
    assert "![" not in text and not list((folder / "assets").glob("*.png"))


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(CardError, match=f"folder {tmp_path}: no config shards"):
        write_card(tmp_path)


def test_statistics_are_reused_while_the_trees_are_unchanged(built, tmp_path, monkeypatch):
    folder = _copy(built, tmp_path)
    before = write_card(folder).read_text()

    def fail(*args, **kwargs):
        raise AssertionError("statistics computed again")

    monkeypatch.setattr("action100m_hf.hub.stats.compute_stats", fail)
    assert write_card(folder).read_text() == before
    layout.write_config([schema.tree_table(built[1][:4])], folder, "tree")
    with pytest.raises(AssertionError, match="computed again"):
        write_card(folder)


def test_cli_card_writes_prints_and_keeps_settings(built, tmp_path, capsys):
    folder = _copy(built, tmp_path)
    assert cli_main(["card", str(folder), "--repo-id", "me/mine", "--pretty-name", "My actions"]) == 0
    counts = expected_rows(built[1])
    assert capsys.readouterr().out.strip() == (
        f"wrote {folder}/README.md: tree ({counts['tree']} rows), brief_action ({counts['brief_action']} rows), "
        f"detailed_action ({counts['detailed_action']} rows), brief_caption ({counts['brief_caption']} rows), "
        f"detailed_caption ({counts['detailed_caption']} rows), segments ({counts['segments']} rows); "
        "its examples load 'me/mine'"
    )
    assert cli_main(["card", str(folder)]) == 0  # a refresh keeps them
    data = DatasetCard((folder / "README.md").read_text()).data
    assert data.pretty_name == "My actions" and 'load_dataset("me/mine"' in (folder / "README.md").read_text()


def test_card_code_examples_run(built):
    text = built[2]
    assert "from action100m_hf import collate_frames, with_frames" in text
    exec("from action100m_hf import collate_frames, with_frames")  # the card's import works
