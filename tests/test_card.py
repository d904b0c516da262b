"""The dataset card: valid YAML for the Hub and `datasets`, and numbers equal to an independent recount."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from action100m_hf.data import layout

from action100m_hf.data import schema

from action100m_hf.data import views
from action100m_hf.hub.card import CardError, field_rows, render_card, validate_card, write_card
from action100m_hf.hub.plots import PLOT_FILES
from action100m_hf.hub.stats import compute_stats

from test_stats import hub_folder_of, random_tree_rows, reference_stats

BUILD_INFO = {
    "repo_id": "someone/action100m-mini",
    "pretty_name": "Action100M mini",
    "profile": "tiny",
    "models": {"segmentation": "facebook/vjepa2-vitg-fpc64-384", "annotation": "openai/gpt-oss-120b"},
    "settings": {"caption": {"num_frames": 32, "max_new_tokens": 1024}, "annotation": {"rounds": 3}},
    "code_version": "action100m-hf 0.1.0 (abc1234)",
    "source": "9 synthetic videos",
}


def expected_rows(rows: list[dict]) -> dict[str, int]:
    """Rows of each config, recounted from the tree rows without the library's views."""
    nodes = [n for r in rows for n in r["nodes"]]
    gpt = [n["gpt"] for n in nodes if n["gpt"] is not None]
    named = [g for g in gpt if g["action"]["brief"] != "N/A"]
    return {"tree": len(rows), "brief_action": len(named), "detailed_action": len(named),
            "brief_caption": len(gpt), "detailed_caption": len(gpt), "segments": len(nodes)}


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
    for piece in ("| profile | tiny |", "| code | action100m-hf 0.1.0 (abc1234) |",
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


def test_unknown_build_info_key_is_refused_and_card_kept(built, tmp_path):
    folder = _copy(built, tmp_path)
    before = (folder / "README.md").read_text()
    with pytest.raises(CardError, match="unknown build_info key.*licence"):
        write_card(folder, {"licence": "mit"})
    assert (folder / "README.md").read_text() == before


def test_folder_without_tree_or_default_config(built, tmp_path):
    folder = _copy(built, tmp_path)
    shutil.rmtree(folder / "brief_action")
    with pytest.raises(CardError, match="no brief_action shards"):
        write_card(folder)
    shutil.rmtree(folder / "tree")
    with pytest.raises(CardError, match=f"no tree shards under {folder / 'tree'}"):
        write_card(folder)


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
