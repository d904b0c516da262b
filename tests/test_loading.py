"""Flat configs, loading through `datasets` (streaming and not), the Hub layout, the builder class,
the CLI and bad input: each error names the file, video or config."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from action100m_hf.data import layout

from action100m_hf import load

from action100m_hf.data import schema

from action100m_hf.data import tree

from action100m_hf.data import views
from action100m_hf.cli import main as cli_main
from action100m_hf.errors import ShardReadError, UnknownConfigError
from action100m_hf.data.tree import TreeNode

from test_tree import small_tree

REPO = Path(__file__).resolve().parents[1]


def synthetic_rows() -> list[dict]:
    """Two videos: the small tree (one N/A action) and a second, differently shaped tree."""
    nodes = small_tree()
    nodes[1]["gpt"] = {
        "summary": {"brief": "nothing happens", "detailed": "A still shot."},
        "action": {"brief": "N/A", "detailed": "N/A", "actor": "N/A"},
    }
    gpt = {
        "summary": {"brief": "b", "detailed": "d"},
        "action": {"brief": "stir soup", "detailed": "Stir the soup.", "actor": "a cook"},
    }
    other = tree.flatten(
        "vid_other",
        TreeNode(0.0, 20.0, [TreeNode(0.0, 12.0, [TreeNode(0.0, 5.0), TreeNode(5.0, 12.0)], fields={"gpt": gpt}),
                             TreeNode(12.0, 20.0)], fields={"gpt": gpt, "plm_caption": "cooking"}),
    )
    metadata = {
        "title": "t", "description": "d", "view_count": 3, "like_count": 1, "duration": 20,
        "upload_date": "20240101", "transcript": [{"time": "0.0", "text": "hi"}],
    }
    return [
        {"video_uid": "vid_small", "metadata": metadata, "nodes": nodes},
        {"video_uid": "vid_other", "metadata": None, "nodes": other},
    ]


EXPECTED_ROWS = {  # vid_small: 2 annotated (one N/A); vid_other: 2 annotated
    "brief_action": 3, "detailed_action": 3, "brief_caption": 4, "detailed_caption": 4, "segments": 9 + 5,
}


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shards") / "part-0.parquet"
    pq.write_table(schema.tree_table(synthetic_rows()), path)
    return path


# --- flat views --------------------------------------------------------------------------------


@pytest.mark.parametrize("config", schema.FLAT_CONFIGS)
def test_flat_table_counts_and_schema(config):
    table = views.flat_table(schema.tree_table(synthetic_rows()), config)
    assert table.schema == schema.schema_for(config)
    assert table.num_rows == EXPECTED_ROWS[config]


def test_flat_rows_carry_exact_values():
    rows = views.flat_table(schema.tree_table(synthetic_rows()), "brief_action").to_pylist()
    root_small = small_tree()[0]
    assert rows[0] == {
        "video_uid": "vid_small", "node_id": root_small["node_id"], "parent_id": None, "level": 0,
        "start": 0.0, "end": 10.0, "duration": 10.0, "text": "cut paper", "actor": "a person",
    }
    assert [r["text"] for r in rows] == ["cut paper", "stir soup", "stir soup"]
    assert "N/A" not in {r["text"] for r in rows}
    captions = views.flat_table(schema.tree_table(synthetic_rows()), "brief_caption").to_pylist()
    assert "nothing happens" in {r["text"] for r in captions}  # N/A actions keep their captions


def test_flat_configs_of_official_sample(official_sample):
    table = schema.tree_table([official_sample])
    counts = {c: views.flat_table(table, c).num_rows for c in schema.FLAT_CONFIGS}
    assert counts == {"brief_action": 257, "detailed_action": 257, "brief_caption": 262,
                      "detailed_caption": 262, "segments": 917}


def test_unknown_config_lists_the_valid_ones(shard):
    with pytest.raises(UnknownConfigError, match="brief_actions.*brief_action, detailed_action"):
        load("brief_actions", shard)
    with pytest.raises(UnknownConfigError, match="not a flat config"):
        views.flat_table(schema.tree_table(synthetic_rows()), "tree")


# --- round trip through datasets ------------------------------------------------------------------


@pytest.mark.parametrize("config", ("tree",) + schema.FLAT_CONFIGS)
def test_load_round_trip_streaming_and_not(shard, config):
    expected = (schema.tree_table(synthetic_rows()) if config == "tree"
                else views.flat_table(schema.tree_table(synthetic_rows()), config)).to_pylist()
    ds = load(config, shard)
    assert ds.features == schema.features_for(config)
    assert ds.to_list() == expected
    streamed = load(config, str(shard.parent / "*.parquet"), streaming=True)
    assert streamed.features == schema.features_for(config)
    assert list(streamed) == expected


def test_hub_folder_loads_with_plain_load_dataset(shard, tmp_path):
    out = layout.write_hub_folder(shard, tmp_path / "hub")
    assert datasets.get_dataset_config_names(str(out)) == ["tree", *schema.FLAT_CONFIGS]
    builder = datasets.load_dataset_builder(str(out))
    assert builder.config.name == "brief_action"  # the default config
    for config in ("tree",) + schema.FLAT_CONFIGS:
        ds = datasets.load_dataset(str(out), config, split="train")
        assert ds.num_rows == (2 if config == "tree" else EXPECTED_ROWS[config])
        streamed = datasets.load_dataset(str(out), config, split="train", streaming=True)
        assert list(streamed) == ds.to_list()
        files = sorted((out / config).glob("*.parquet"))
        assert [f.name for f in files] == ["train-00000-of-00001.parquet"]
        assert pq.read_schema(files[0]).remove_metadata() == schema.schema_for(config)
    assert not list(out.rglob("*.py"))


def test_write_config_bounds_row_groups_and_shards(tmp_path):
    table = views.flat_table(schema.tree_table(synthetic_rows() * 50), "segments")
    paths = layout.write_config([table], tmp_path, "segments", max_row_group_bytes=4096, max_shard_bytes=16384)
    assert len(paths) > 1
    assert [p.name for p in paths] == [layout.shard_name(i, len(paths)) for i in range(len(paths))]
    total = 0
    for p in paths:
        meta = pq.ParquetFile(p).metadata
        total += meta.num_rows
        for i in range(meta.num_row_groups):
            assert pq.ParquetFile(p).read_row_group(i).nbytes <= 4096
    assert total == table.num_rows
    back = pa.concat_tables(pq.read_table(p) for p in paths)
    assert back.to_pylist() == table.to_pylist()


def test_failed_write_keeps_previous_shards(tmp_path):
    table = views.flat_table(schema.tree_table(synthetic_rows()), "segments")
    first = layout.write_config([table], tmp_path, "segments")
    before = first[0].read_bytes()

    def broken():
        yield table
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        layout.write_config(broken(), tmp_path, "segments")
    assert [p.name for p in (tmp_path / "segments").iterdir()] == [first[0].name]
    assert first[0].read_bytes() == before


# --- the builder class -------------------------------------------------------------------------


def test_loading_script_builder_class(shard):
    sys.path.insert(0, str(REPO))
    from loading_script.action100m import Action100M

    for config in ("tree", "brief_action", "segments"):
        builder = Action100M(config_name=config, source=str(shard), cache_dir=tempfile.mkdtemp())
        builder.download_and_prepare()
        ds = builder.as_dataset(split="train")
        assert ds.features == schema.features_for(config)
        assert ds.to_list() == load(config, shard).to_list()
        assert list(builder.as_streaming_dataset(split="train")) == ds.to_list()


# --- bad input ----------------------------------------------------------------------------------


def test_missing_source_names_path(tmp_path):
    with pytest.raises(ShardReadError, match=str(tmp_path / "nope")):
        load("brief_action", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardReadError, match="no Parquet files"):
        load("brief_action", tmp_path / "empty")


def test_corrupt_shard_names_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ShardReadError, match="bad.parquet.*not a readable Parquet"):
        load("brief_action", bad)
    with pytest.raises(ShardReadError, match="bad.parquet"):
        list(views.flat_table(b, "segments") for b in __import__("action100m_hf").iter_tree_batches(bad))


def test_wrong_schema_shard_names_missing_column(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"video_uid": ["a"], "x": [1]}), path)
    with pytest.raises(ShardReadError, match="other.parquet: missing column.*nodes"):
        load("segments", path)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_validate_ok_and_failing(shard, tmp_path, capsys):
    assert cli_main(["validate", str(shard)]) == 0
    assert "2 row(s), 0 with violations" in capsys.readouterr().out
    rows = synthetic_rows()
    rows[1]["nodes"][2]["level"] = 9
    bad = tmp_path / "bad.parquet"
    pq.write_table(schema.tree_table(rows), bad)
    assert cli_main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"video vid_other, node {rows[1]['nodes'][2]['node_id']}: [level]" in out
    assert "2 row(s), 1 with violations" in out


def test_cli_flatten_and_show(shard, tmp_path, capsys):
    assert cli_main(["flatten", str(shard), str(tmp_path / "hub"), "--configs", "tree,brief_action"]) == 0
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["README.md", "brief_action", "tree"]
    assert cli_main(["show", str(tmp_path / "hub"), "vid_small", "--max-depth", "1"]) == 0
    assert capsys.readouterr().out.endswith(
        "# vid_small\n\n" + (Path(__file__).parent / "golden" / "markdown_small_depth1.md").read_text() + "\n"
    )


def test_cli_errors_are_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "action100m_hf", "validate", str(tmp_path / "missing.parquet")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"action100m validate: error: tree source {tmp_path / 'missing.parquet'}: no such file or folder"
    proc = subprocess.run([sys.executable, "-m", "action100m_hf", "flatten", "x", "y", "--configs", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown config 'nope'" in proc.stderr


def test_official_sample_through_parquet_and_cli(official_sample, tmp_path, capsys):
    path = tmp_path / "official.parquet"
    pq.write_table(schema.tree_table([official_sample]), path)
    assert load("tree", path)[0]["nodes"] == official_sample["nodes"]
    assert cli_main(["validate", str(path)]) == 0
    assert load("detailed_caption", path, streaming=True).features == schema.features_for("detailed_caption")
    assert json.dumps(load("brief_action", path)[0]["text"]) == '"decorate journal spread"'


def test_same_named_folder_with_other_content_is_not_served_from_cache(tmp_path, official_sample):
    """`datasets` keys a local folder's cache on its README YAML only: dataset_info keeps it honest."""
    first = tmp_path / "a" / "hub"
    pq.write_table(schema.tree_table([official_sample]), tmp_path / "a.parquet")
    layout.write_hub_folder(tmp_path / "a.parquet", first)
    assert datasets.load_dataset(str(first), "brief_action", split="train").num_rows == 257
    second = tmp_path / "b" / "hub"
    pq.write_table(schema.tree_table(synthetic_rows()), tmp_path / "b.parquet")
    layout.write_hub_folder(tmp_path / "b.parquet", second)
    assert datasets.load_dataset(str(second), "brief_action", split="train").num_rows == 3


@pytest.mark.parametrize("config", schema.FLAT_CONFIGS)
def test_projected_flat_batches_equal_full_flattening(shard, config):
    from action100m_hf.data.loading import iter_flat_batches

    projected = pa.concat_tables(iter_flat_batches(shard, config))
    assert projected.schema == schema.schema_for(config)
    assert projected.to_pylist() == views.flat_table(schema.tree_table(synthetic_rows()), config).to_pylist()
