"""The `datasets` builder of every Action100M config, over any source of shards: what `load()` runs.

Shaped like `datasets`' packaged Parquet builder (`ArrowBasedBuilder`, `_generate_tables` yielding
Arrow tables, one shard per row group when resharded): `tree` rows as released, flat configs read
from the node columns they need only, resampled configs from their stored shards. The cache id of
a config includes each source file's identity (path, size, mtime or ETag), so a rewritten source
is never served from an old cache. `loading_script/action100m.py` exposes this class.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import pyarrow as pa

from action100m_hf.data import loading, sources
from action100m_hf.data.schema import CONFIG_NAMES, DEFAULT_CONFIG, FLAT_CONFIGS, OFFICIAL_SOURCE, SPLIT, features_for, schema_for
from action100m_hf.errors import Action100MError

_DESCRIPTION = (
    "Action100M: 1.2 M instructional videos with 147 M temporally localized segments in a "
    "Tree-of-Captions (Meta FAIR, 2026). `tree` has one row per video; the flat configs one row per "
    "segment; the resampled configs a semantically balanced sample of brief actions."
)
_CITATION = """@article{action100m2026,
  title   = {Action100M: A Large-Scale Video Action Dataset},
  author  = {{Meta FAIR}},
  journal = {arXiv preprint arXiv:2601.10592},
  year    = {2026}
}"""
#: Videos per Arrow batch read from a tree shard (a released video is ~1 MB of tree).
TREE_BATCH_SIZE = 64
#: `datasets` >= 4 keys generated tables by (shard, batch); older versions (the loading script) by a string.
_Key = getattr(datasets.builder, "Key", None)


@dataclass
class Action100MConfig(datasets.BuilderConfig):
    """A config of the dataset over `source`: a file, folder, glob or URL (hf://, http(s)://, any
    fsspec URL) of tree shards, or a folder holding a resampled config's folder; or a list of those."""

    source: str | list = OFFICIAL_SOURCE
    batch_size: int = TREE_BATCH_SIZE
    skip_invalid: bool = False


class Action100M(datasets.ArrowBasedBuilder):
    """Every config of Action100M: `tree`, the flat configs and the resampled ones.

    `storage_options` are the fsspec options of the source's filesystem, keyed by protocol as
    `datasets` takes them (`{"hf": {"token": ...}}`).
    """

    BUILDER_CONFIG_CLASS = Action100MConfig
    BUILDER_CONFIGS = [Action100MConfig(name=name) for name in CONFIG_NAMES]
    DEFAULT_CONFIG_NAME = DEFAULT_CONFIG

    def __init__(self, *args, dataset_name: str = "action100m", **kwargs):
        super().__init__(*args, dataset_name=dataset_name, **kwargs)

    def _create_builder_config(self, config_name=None, custom_features=None, **config_kwargs):
        # `datasets` keys the cache on the config's kwargs only: the id here also holds what each
        # source file is now (path, size, version) and the library version (the derivation of
        # flat rows may change between versions), so a rewritten source is never read from cache.
        from action100m_hf import __version__

        named_id = config_kwargs.get("config_id")  # datasets >= 4 passes it (None unless a caller names one)
        config, config_id = super()._create_builder_config(config_name, custom_features, **config_kwargs)
        source = config.source
        source = [str(s) for s in source] if isinstance(source, (list, tuple)) else str(source)
        self._files = loading.config_files(source, config.name, self.storage_options)
        if named_id is None:
            identity = {k: v for k, v in config_kwargs.items() if k != "config_id"}
            identity["source"] = [sources.file_identity(f, self.storage_options) for f in self._files]
            config_id = config.create_config_id(dict(identity, action100m_hf=__version__), custom_features)
        return config, config_id

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            features=features_for(self.config.name),
            homepage="https://github.com/facebookresearch/Action100M",
        )

    def _split_generators(self, dl_manager):
        # The source is read directly (byte ranges of the needed columns), never downloaded whole.
        files = self._files
        return [datasets.SplitGenerator(name=SPLIT, gen_kwargs={"files": files, "row_groups": [None] * len(files)})]

    def _generate_shards(self, files, row_groups):
        yield from files

    def _generate_more_gen_kwargs(self, files, row_groups):
        """One shard per row group, so that DataLoader workers and ranks can share a single file."""
        for path, groups in zip(files, row_groups):
            if groups is None:
                with sources.open_parquet(path, self.storage_options) as shard:
                    groups = [(g,) for g in range(shard.num_row_groups)]
                yield {"files": [path] * len(groups), "row_groups": groups}
            else:
                yield {"files": [path], "row_groups": [groups]}

    def _generate_tables(self, files, row_groups):
        config = self.config
        for file_index, (path, groups) in enumerate(zip(files, row_groups)):
            if config.name == "tree" or config.name in FLAT_CONFIGS:
                tables = loading.read_tree_shard(
                    path, config.name, batch_size=config.batch_size, row_groups=groups,
                    on_invalid="skip" if config.skip_invalid else "raise", storage_options=self.storage_options,
                )  # fmt: skip
            else:
                tables = loading.read_stored_shard(
                    path, config.name, row_groups=groups, storage_options=self.storage_options
                )
            for batch_index, table in enumerate(tables):
                key = _Key(file_index, batch_index) if _Key else f"{file_index}_{batch_index}"
                yield key, table if isinstance(table, pa.Table) else pa.Table.from_batches([table])

    def download_and_prepare(self, *args, **kwargs):
        """As `datasets`' method, but a failure of ours surfaces as itself (one line naming the
        shard), not wrapped in a `DatasetGenerationError`."""
        try:
            return super().download_and_prepare(*args, **kwargs)
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error.__cause__ or error.__context__
            while cause is not None and not isinstance(cause, Action100MError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None


def load(
    config: str = DEFAULT_CONFIG,
    source=None,
    *,
    streaming: bool = False,
    split: str = SPLIT,
    skip_invalid: bool = False,
    video_root=None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    storage_options: dict | None = None,
    **frame_options,
):
    """Any config of the dataset over `source` (default: the official preview on the Hub).

    Returns a `datasets.Dataset` (or `IterableDataset` when `streaming`) whose features equal
    `schema.features_for(config)` exactly, built by `data.builder.Action100M` (cached under
    `cache_dir`, keyed by each source file's path, size and version). Trees that break a rule are
    refused with `tree.validate`'s report, or left out with a warning listing them (`skip_invalid`).
    With `video_root`, rows also carry their segment's frames, decoded lazily
    (`frame_dataset.with_frames`; `frame_options` such as `num_frames`, `size`, `on_missing` go there).
    """
    import datasets

    schema_for(config)  # unknown names fail here, with the list of configs
    if frame_options and video_root is None:
        raise TypeError(f"{', '.join(frame_options)}: frame options need video_root")
    if video_root is not None and config == "tree":
        raise ValueError("frames come with a segment config (brief_action, segments, ...), not with tree rows")
    builder = Action100M(
        config_name=config,
        source=OFFICIAL_SOURCE if source is None else source,
        skip_invalid=skip_invalid,
        storage_options=storage_options,
        cache_dir=cache_dir,
    )
    if streaming:
        ds = builder.as_streaming_dataset(split=split)
    else:
        builder.download_and_prepare(num_proc=num_proc)
        if builder.info.splits[split].num_examples == 0:  # `as_dataset` refuses an empty split
            ds = datasets.Dataset(builder.info.features.arrow_schema.empty_table(), info=builder.info, split=split)
        else:
            ds = builder.as_dataset(split=split)
    if video_root is None:
        return ds
    from action100m_hf.data.frame_dataset import with_frames

    return with_frames(ds, video_root, **frame_options)
