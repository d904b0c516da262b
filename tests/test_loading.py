"""Flat configs, loading through the builder (streaming and not, local, HTTP and memory sources), the
Hub layout, the cache, the CLI and bad input: each error names the file, video, node or config."""

from __future__ import annotations

import email.utils
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from action100m_hf.data import layout

from action100m_hf import load

from action100m_hf.data import schema

from action100m_hf.data import tree

from action100m_hf.data import views
from action100m_hf.cli import main as cli_main
from action100m_hf.errors import ShardReadError, TreeValidationError, UnknownConfigError
from action100m_hf.data.sources import compressed_bytes
from action100m_hf.data.tree import TreeNode

from conftest import serve_folder
from conftest import small_tree

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


# --- the builder class, every config, any source ----------------------------------------------


def resampled_rows(count: int) -> list[dict]:
    nodes = [n for n in views.flat_table(schema.tree_table(synthetic_rows()), "brief_action").to_pylist()]
    return [
        {"sample_index": i, "video_uid": nodes[i % 3]["video_uid"], "node_id": nodes[i % 3]["node_id"],
         "start": nodes[i % 3]["start"], "end": nodes[i % 3]["end"], "duration": nodes[i % 3]["duration"],
         "text": nodes[i % 3]["text"], "cluster_id": i % 2, "cluster_size": 2}
        for i in range(count)
    ]  # fmt: skip


def expected_rows_of(config: str) -> list[dict]:
    if config in schema.RESAMPLED_CONFIGS:
        return resampled_rows(7)
    table = schema.tree_table(synthetic_rows())
    return (table if config == "tree" else views.flat_table(table, config)).to_pylist()


@pytest.fixture(scope="module")
def hub(shard, tmp_path_factory) -> Path:
    """A Hub-layout folder with every config, resampled ones included."""
    out = layout.write_hub_folder(shard, tmp_path_factory.mktemp("every") / "hub")
    for config in schema.RESAMPLED_CONFIGS:
        layout.write_config([pa.Table.from_pylist(resampled_rows(7), schema=schema.RESAMPLED_SCHEMA)], out, config)
    layout.update_readme_configs(out)
    return out


def test_the_builder_class_serves_every_config(hub, tmp_path):
    from action100m_hf.data.builder import Action100M

    sys.path.insert(0, str(REPO))
    from loading_script.action100m import Action100M as ScriptClass

    assert ScriptClass is Action100M
    assert [c.name for c in Action100M.BUILDER_CONFIGS] == list(schema.CONFIG_NAMES)
    for config in schema.CONFIG_NAMES:
        builder = Action100M(config_name=config, source=str(hub), cache_dir=str(tmp_path / "cache"))
        builder.download_and_prepare()
        ds = builder.as_dataset(split="train")
        assert ds.features == schema.features_for(config)
        assert ds.to_list() == expected_rows_of(config)
        assert list(builder.as_streaming_dataset(split="train")) == ds.to_list()
    assert Action100M(source=str(hub), cache_dir=str(tmp_path / "cache")).config.name == "brief_action"


@pytest.mark.parametrize("config", schema.RESAMPLED_CONFIGS)
def test_resampled_configs_load_from_a_folder_its_own_folder_and_http(hub, config, tmp_path):
    expected = expected_rows_of(config)
    assert load(config, hub, cache_dir=str(tmp_path)).to_list() == expected
    assert list(load(config, hub / config, streaming=True)) == expected
    with serve_folder(hub.parent) as (url, _):
        assert list(load(config, f"{url}/hub", streaming=True)) == expected
        assert load(config, f"{url}/hub/", cache_dir=str(tmp_path)).to_list() == expected


def test_a_resampled_config_missing_from_the_folder_names_where_it_was_expected(shard, tmp_path):
    out = layout.write_hub_folder(shard, tmp_path / "hub", ["tree"])
    with pytest.raises(ShardReadError, match=f"config resampled_k1e4: expected its shards in {out}/resampled_k1e4/"):
        load("resampled_k1e4", out)


@pytest.mark.parametrize("config", ("tree",) + schema.FLAT_CONFIGS)
def test_http_and_memory_sources_load_what_a_local_file_loads(hub, config, tmp_path):
    expected = expected_rows_of(config)
    with serve_folder(hub.parent) as (url, sent):
        assert list(load(config, f"{url}/hub", streaming=True)) == expected
        assert load(config, f"{url}/hub/tree/train-00000-of-00001.parquet", cache_dir=str(tmp_path)).to_list() == expected
        assert sent["requests"] > 0
    memory = fsspec.filesystem("memory")
    memory.pipe(f"/{config}/tree/part-0.parquet", (hub / "tree" / "train-00000-of-00001.parquet").read_bytes())
    assert list(load(config, f"memory://{config}", streaming=True)) == expected
    assert load(config, f"memory:///{config}/tree/*.parquet", cache_dir=str(tmp_path)).to_list() == expected


def test_streaming_over_http_transfers_only_the_columns_a_config_needs(tmp_path):
    """Long captions and transcripts are most of a tree; brief_action reads none of them."""
    rows = []
    for i in range(60):
        for row in synthetic_rows():
            row = renamed(row, f"{row['video_uid']}{i:03d}")
            for n in row["nodes"]:
                n["plm_caption"] = os.urandom(1500).hex()
            rows.append(dict(row, metadata={"description": os.urandom(3000).hex()}))
    layout.write_config([schema.tree_table(rows)], tmp_path, "tree", max_row_group_bytes=1 << 20)
    path = tmp_path / "tree" / "train-00000-of-00001.parquet"
    node = "nodes.list.element."
    leaves = ["video_uid"] + [node + f for f in ("node_id", "parent_id", "level", "start", "end", "gpt.action.brief",
                                                 "gpt.action.actor")]  # fmt: skip
    needed = compressed_bytes(pq.ParquetFile(path).metadata, leaves)
    footer = 64 * 1024  # pyarrow reads the last 64 KiB to find the footer
    with serve_folder(tmp_path) as (url, sent):
        got = list(load("brief_action", url, streaming=True))
    assert len(got) == 3 * 60
    assert path.stat().st_size > 10 * (needed + footer)
    assert sent["bytes"] <= 1.3 * needed + footer


def renamed(row: dict, video_uid: str) -> dict:
    """`row` as another video: the same tree, with the node ids of `video_uid`."""
    return dict(row, video_uid=video_uid, nodes=tree.flatten(video_uid, tree.nest(row["nodes"])))


def test_a_rewritten_source_is_not_served_from_the_cache(tmp_path):
    path = tmp_path / "trees.parquet"
    rows = synthetic_rows()
    cache = str(tmp_path / "cache")
    pq.write_table(schema.tree_table([renamed(rows[i % 2], f"v{i}") for i in range(10)]), path)
    assert load("tree", path, cache_dir=cache).num_rows == 10
    pq.write_table(schema.tree_table(rows + rows[:1]), path)
    assert load("tree", path, cache_dir=cache).num_rows == 3
    assert [r["video_uid"] for r in load("tree", path, cache_dir=cache)] == ["vid_small", "vid_other", "vid_small"]
    memory = fsspec.filesystem("memory")
    memory.pipe("/stale/a.parquet", path.read_bytes())
    assert load("segments", "memory://stale", cache_dir=cache).num_rows == 9 + 5 + 9
    pq.write_table(schema.tree_table(rows[1:]), path)
    memory.pipe("/stale/a.parquet", path.read_bytes())
    assert load("segments", "memory://stale", cache_dir=cache).num_rows == 5


def test_the_cache_id_holds_each_file_identity(shard, tmp_path):
    from action100m_hf.data.builder import Action100M
    from action100m_hf.data.sources import file_identity

    copy = tmp_path / "copy.parquet"
    copy.write_bytes(shard.read_bytes())
    first = Action100M(config_name="segments", source=str(copy), cache_dir=str(tmp_path)).config_id
    assert first == Action100M(config_name="segments", source=str(copy), cache_dir=str(tmp_path)).config_id
    os.utime(copy, ns=(0, 1_000_000_000))
    assert file_identity(str(copy)) == (str(copy), shard.stat().st_size, "1000000000")
    assert Action100M(config_name="segments", source=str(copy), cache_dir=str(tmp_path)).config_id != first
    with serve_folder(tmp_path) as (url, _):  # a remote file: its size and Last-Modified (or ETag)
        modified = email.utils.formatdate(1, usegmt=True)
        assert file_identity(f"{url}/copy.parquet") == (f"{url}/copy.parquet", shard.stat().st_size, modified)


def test_streaming_reshards_one_file_by_row_group(tmp_path):
    table = schema.tree_table(synthetic_rows() * 30)
    layout.write_config([table], tmp_path, "tree", max_row_group_bytes=8 * 1024)
    groups = pq.ParquetFile(tmp_path / "tree" / "train-00000-of-00001.parquet").num_row_groups
    assert groups > 2
    ds = load("brief_action", tmp_path, streaming=True)
    assert ds.num_shards == 1
    resharded = ds.reshard()
    assert resharded.num_shards == groups
    assert list(resharded) == list(ds)


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


def corrupt_data_pages(path: Path) -> None:
    """Flip bytes of the first data pages, leaving the footer readable."""
    data = bytearray(path.read_bytes())
    data[64:4000] = bytes(b ^ 0x5A for b in data[64:4000])
    path.write_bytes(bytes(data))


def load_all(config: str, source, streaming: bool, tmp_path: Path, **kwargs) -> list[dict]:
    ds = load(config, source, streaming=streaming, cache_dir=str(tmp_path / "cache"), **kwargs)
    return list(ds) if streaming else ds.to_list()


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("config", ["tree", "brief_action"])
def test_corrupt_data_pages_name_the_shard_and_row_group_in_one_line(tmp_path, config, streaming):
    path = tmp_path / "pages.parquet"
    pq.write_table(schema.tree_table([renamed(synthetic_rows()[i % 2], f"v{i}") for i in range(40)]), path)
    corrupt_data_pages(path)
    with pytest.raises(ShardReadError) as error:
        load_all(config, path, streaming, tmp_path)
    assert str(error.value).startswith(f"tree shard {path}: row group 0: cannot read (")
    assert "\n" not in str(error.value)


NODE_WITH_TEXT_START = pa.list_(pa.struct([("node_id", pa.string()), ("parent_id", pa.string()), ("level", pa.int16()),
                                           ("start", pa.string()), ("end", pa.float32())]))  # fmt: skip


@pytest.mark.parametrize("streaming", [False, True])
def test_nodes_of_the_wrong_type_name_the_shard_and_the_cause(tmp_path, streaming):
    metadata = pa.array([None], schema.METADATA_TYPE)
    strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"video_uid": ["a"], "metadata": metadata, "nodes": ["not nodes"]}), strings)
    with pytest.raises(ShardReadError, match=f"^tree shard {strings}: column nodes is string, not a list of node structs$"):
        load_all("brief_action", strings, streaming, tmp_path)
    texts = tmp_path / "text-start.parquet"
    nodes = pa.array([[{"node_id": "x", "parent_id": None, "level": 0, "start": "zero", "end": 1.0}]], NODE_WITH_TEXT_START)
    pq.write_table(pa.table({"video_uid": ["a"], "metadata": metadata, "nodes": nodes}), texts)
    with pytest.raises(ShardReadError, match=f"^tree shard {texts}: cannot read as the tree contract .*'zero'"):
        load_all("tree", texts, streaming, tmp_path)
    with pytest.raises(ShardReadError, match=f"^tree shard {texts}: no column for nodes.gpt.action.brief$"):
        load_all("brief_action", texts, streaming, tmp_path)


def invalid_and_valid_rows() -> list[dict]:
    """vid_small with a node ending 4 s before it starts, vid_other with a NaN start, then a valid video."""
    rows = synthetic_rows()
    rows[0]["nodes"][3]["end"] = rows[0]["nodes"][3]["start"] - 4.0
    rows[1]["nodes"][2]["start"] = float("nan")
    return rows + [renamed(synthetic_rows()[1], "vid_valid")]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_refuses_invalid_trees_with_the_validate_report(tmp_path, streaming):
    path = tmp_path / "invalid.parquet"
    rows = invalid_and_valid_rows()
    pq.write_table(schema.tree_table(rows), path)
    with pytest.raises(TreeValidationError) as error:
        load_all("segments", path, streaming, tmp_path)
    message = str(error.value)
    assert message.startswith(f"tree shard {path}: 2 video(s) break the tree rules (skip_invalid=True")
    assert "\n" not in message
    assert f"video vid_small, node {rows[0]['nodes'][3]['node_id']}: [start_not_before_end]" in message
    assert f"video vid_other, node {rows[1]['nodes'][2]['node_id']}: [non_finite] start=nan" in message
    assert {v.video_uid for v in error.value.violations} == {"vid_small", "vid_other"}


@pytest.mark.parametrize("streaming", [False, True])
def test_skip_invalid_keeps_the_valid_videos_and_lists_the_skipped_ones(tmp_path, streaming):
    path = tmp_path / "invalid.parquet"
    rows = invalid_and_valid_rows()
    pq.write_table(schema.tree_table(rows), path)
    with pytest.warns(tree.SkippedInvalidTrees) as caught:
        got = load_all("segments", path, streaming, tmp_path, skip_invalid=True)
    assert got == views.flat_table(schema.tree_table(rows[2:]), "segments").to_pylist()
    assert all(r["start"] < r["end"] for r in got)
    [warning] = [w for w in caught if w.category is tree.SkippedInvalidTrees]
    assert str(warning.message).startswith(f"tree shard {path}: skipped 2 invalid video(s): video vid_small, node ")
    assert {v.video_uid for v in warning.message.violations} == {"vid_small", "vid_other"}


def test_iter_tree_batches_keeps_every_row_unless_asked(tmp_path):
    from action100m_hf import iter_tree_batches

    path = tmp_path / "invalid.parquet"
    pq.write_table(schema.tree_table(invalid_and_valid_rows()), path)
    assert sum(b.num_rows for b in iter_tree_batches(path, columns=("video_uid", "nodes"))) == 3
    with pytest.raises(TreeValidationError, match="2 video"):
        list(iter_tree_batches(path, on_invalid="raise"))
    with pytest.warns(tree.SkippedInvalidTrees):
        assert [b.column("video_uid").to_pylist() for b in iter_tree_batches(path, on_invalid="skip")] == [["vid_valid"]]


def test_a_config_without_rows_loads_as_an_empty_dataset(tmp_path):
    rows = [dict(row, nodes=[dict(n, gpt=None) for n in row["nodes"]]) for row in synthetic_rows()]
    path = tmp_path / "unannotated.parquet"
    pq.write_table(schema.tree_table(rows), path)
    ds = load("brief_action", path, cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 0 and ds.features == schema.features_for("brief_action")
    assert list(load("brief_action", path, streaming=True)) == []
    assert load("segments", path, cache_dir=str(tmp_path / "cache")).num_rows == 14


def test_frame_options_need_a_video_root(shard):
    with pytest.raises(TypeError, match="num_frames, size: frame options need video_root"):
        load("brief_action", shard, num_frames=4, size=32)
    with pytest.raises(ValueError, match="frames come with a segment config"):
        load("tree", shard, video_root=".")


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
    assert layout.configs_present(tmp_path / "hub") == ["tree", "brief_action"]
    assert (tmp_path / "hub" / "README.md").is_file()
    assert cli_main(["show", str(tmp_path / "hub"), "vid_small", "--max-depth", "1"]) == 0
    assert capsys.readouterr().out.endswith(
        "# vid_small\n\n" + (Path(__file__).parent / "golden" / "markdown_small_depth1.md").read_text() + "\n"
    )


def test_cli_flatten_refuses_invalid_trees_and_keeps_what_was_written(shard, tmp_path, capsys):
    out = tmp_path / "hub"
    assert cli_main(["flatten", str(shard), str(out), "--configs", "tree,segments"]) == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*.parquet")}
    bad = tmp_path / "invalid.parquet"
    rows = invalid_and_valid_rows()
    pq.write_table(schema.tree_table(rows), bad)
    capsys.readouterr()
    assert cli_main(["flatten", str(bad), str(out), "--configs", "tree,segments"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"action100m flatten: error: tree shard {bad}: 2 video(s) break the tree rules")
    assert f"video vid_other, node {rows[1]['nodes'][2]['node_id']}: [non_finite]" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.rglob("*.parquet")} == before


def test_cli_flatten_skip_invalid_writes_the_valid_videos_and_lists_the_others(tmp_path, capsys):
    bad = tmp_path / "invalid.parquet"
    rows = invalid_and_valid_rows()
    pq.write_table(schema.tree_table(rows), bad)
    out = tmp_path / "hub"
    assert cli_main(["flatten", str(bad), str(out), "--configs", "tree,segments", "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"action100m flatten: tree shard {bad}: skipped 2 invalid video(s): video vid_small, node ")
    assert "video vid_other, node" in err
    segments = pq.read_table(out / "segments" / "train-00000-of-00001.parquet")
    assert set(segments.column("video_uid").to_pylist()) == {"vid_valid"}
    assert min(segments.column("duration").to_pylist()) > 0
    assert pq.read_table(out / "tree").column("video_uid").to_pylist() == ["vid_valid"]


def test_flatten_writes_action100m_here_so_load_dataset_action100m_works(shard, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["flatten", str(shard)]) == 0
    assert layout.configs_present(tmp_path / "action100m") == ["tree", *schema.FLAT_CONFIGS]
    ds = datasets.load_dataset("action100m", "brief_action", split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.to_list() == expected_rows_of("brief_action")


def test_cli_show_warns_on_an_invalid_tree_and_renders_a_cycle_once(tmp_path, capsys):
    nodes = small_tree()
    a, b = nodes[1], nodes[2]
    a["parent_id"], b["parent_id"] = b["node_id"], a["node_id"]
    path = tmp_path / "cycle.parquet"
    pq.write_table(schema.tree_table([{"video_uid": "vid_small", "metadata": None, "nodes": nodes}]), path)
    assert cli_main(["show", str(path), "--node", a["node_id"]]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("action100m show: warning: the tree breaks ")
    assert f"video vid_small, node {a['node_id']}: [unreachable]" in captured.err
    assert captured.out.startswith("# vid_small\n\n## 0.00s → 6.00s (duration: 6.0s)\n\nA caption.")
    assert captured.out.count("6.00s → 10.00s") == 1 and captured.out.count("0.00s → 6.00s") == 1


def test_cli_flatten_names_a_corrupt_shard_in_one_line(tmp_path):
    path = tmp_path / "pages.parquet"
    pq.write_table(schema.tree_table([renamed(synthetic_rows()[i % 2], f"v{i}") for i in range(40)]), path)
    corrupt_data_pages(path)
    proc = subprocess.run([sys.executable, "-m", "action100m_hf", "flatten", str(path), str(tmp_path / "out")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"action100m flatten: error: tree shard {path}: row group 0: cannot read (")
    assert proc.stderr.count("\n") == 1


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
