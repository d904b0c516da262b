"""The published folder (layout + card): plain `load_dataset` for every config, and every shard
readable by pyarrow, polars and duckdb within the row-group bound."""

from __future__ import annotations

from pathlib import Path

import datasets
import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from action100m_hf.data import layout

from action100m_hf.data import schema

from action100m_hf.data import views
from action100m_hf.hub.card import write_card

from conftest import expected_rows, hub_folder_of, random_tree_rows

CONFIGS = ("tree", *schema.FLAT_CONFIGS)
#: Small bounds for two configs, so that they span several shards and row groups.
SMALL_BOUNDS = {"tree": (48 * 1024, 160 * 1024), "segments": (16 * 1024, 48 * 1024)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    rows = random_tree_rows(16, seed=11)
    folder = hub_folder_of(rows, tmp_path_factory, "published")
    table = schema.tree_table(rows)
    for config, (row_group, shard) in SMALL_BOUNDS.items():
        data = table if config == "tree" else views.flat_table(table, config)
        layout.write_config([data], folder, config, max_row_group_bytes=row_group, max_shard_bytes=shard)
    write_card(folder, {"repo_id": "someone/published"})
    return folder, rows, tmp_path_factory.mktemp("cache")


def _shards(folder: Path, config: str) -> list[Path]:
    return sorted((folder / config).glob("*.parquet"))


def test_configs_and_default(hub):
    folder, _, _ = hub
    assert datasets.get_dataset_config_names(str(folder)) == list(CONFIGS)
    assert datasets.load_dataset_builder(str(folder)).config.name == "brief_action"
    assert not list(folder.rglob("*.py"))


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_loads_streaming_and_not(hub, config):
    folder, rows, cache = hub
    ds = datasets.load_dataset(str(folder), config, split="train", cache_dir=str(cache))
    assert ds.features == schema.features_for(config)
    assert ds.num_rows == expected_rows(rows)[config]
    streamed = datasets.load_dataset(str(folder), config, split="train", streaming=True)
    assert streamed.features == schema.features_for(config)
    assert list(streamed) == ds.to_list()
    if config == "tree":
        assert [r["video_uid"] for r in ds] == [r["video_uid"] for r in rows]
        assert ds[3]["nodes"] == pq.read_table(_shards(folder, "tree")).slice(3, 1).to_pylist()[0]["nodes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_shards_read_with_pyarrow_polars_duckdb_within_bounds(hub, config):
    folder, rows, _ = hub
    shards = _shards(folder, config)
    assert [p.name for p in shards] == [layout.shard_name(i, len(shards)) for i in range(len(shards))]
    if config in SMALL_BOUNDS:
        assert len(shards) > 1
    row_group_bound = SMALL_BOUNDS.get(config, (layout.MAX_ROW_GROUP_BYTES,))[0]
    total = 0
    for path in shards:
        parquet = pq.ParquetFile(path)
        assert parquet.schema_arrow.remove_metadata() == schema.schema_for(config)
        for i in range(parquet.num_row_groups):
            group = parquet.read_row_group(i)
            assert group.num_rows == 1 or group.nbytes <= row_group_bound, (path, i)
        frame = pl.read_parquet(path)
        assert frame.columns == schema.schema_for(config).names
        assert frame.height == parquet.metadata.num_rows
        total += frame.height
    assert total == expected_rows(rows)[config]
    glob = str(folder / config / "train-*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(total,)]
    if config == "tree":
        lengths = duckdb.sql(f"SELECT video_uid, len(nodes) FROM read_parquet('{glob}')").fetchall()
        assert sorted(lengths) == sorted((r["video_uid"], len(r["nodes"])) for r in rows)


def test_shards_are_written_as_datasets_5_writes_parquet(hub):
    """A page index and content-defined chunking (recorded as `datasets` records it), so that a
    re-upload of mostly unchanged data deduplicates on the Hub."""
    import json

    import datasets.config

    folder, _, _ = hub
    shards = sorted(folder.glob("*/train-*.parquet"))
    assert {p.parent.name for p in shards} == set(CONFIGS)
    for path in shards:
        metadata = pq.ParquetFile(path).metadata
        assert json.loads(metadata.metadata[b"content_defined_chunking"]) == datasets.config.DEFAULT_CDC_OPTIONS
        for g in range(metadata.num_row_groups):
            for c in range(metadata.num_columns):
                column = metadata.row_group(g).column(c)
                assert column.has_offset_index and column.has_column_index, (path, g, column.path_in_schema)
    assert layout.parquet_write_options() == {
        "write_page_index": True, "use_content_defined_chunking": datasets.config.DEFAULT_CDC_OPTIONS,
    }  # fmt: skip
