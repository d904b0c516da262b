"""A `datasets` builder class with every Action100M config, over any source of tree shards.

`datasets` removed loading scripts in 4.0, so `load_dataset("path/to/action100m.py")` no longer
works there. Use the class directly (any `datasets` version):

    from loading_script.action100m import Action100M
    builder = Action100M(config_name="brief_action", source="path/or/hf://.../*.parquet")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")          # or builder.as_streaming_dataset(split="train")

With `datasets` < 4, `load_dataset("loading_script/action100m.py", "brief_action", source=...)`
works too. Everything here delegates to the `action100m_hf` library: the schemas come from
`action100m_hf.data.schema`, the rows from `action100m_hf.data.loading` and `action100m_hf.data.views`.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import pyarrow as pa

from action100m_hf.data.loading import iter_tree_batches, tree_files
from action100m_hf.data.schema import (
    DEFAULT_CONFIG,
    FLAT_CONFIGS,
    OFFICIAL_SOURCE,
    SPLIT,
    features_for,
)
from action100m_hf.data.views import flat_table

_DESCRIPTION = (
    "Action100M: 1.2 M instructional videos with 147 M temporally localized segments in a "
    "Tree-of-Captions (Meta FAIR, 2026). `tree` has one row per video; the flat configs one row per segment."
)
_CITATION = """@article{action100m2026,
  title   = {Action100M: A Large-Scale Video Action Dataset},
  author  = {{Meta FAIR}},
  journal = {arXiv preprint arXiv:2601.10592},
  year    = {2026}
}"""


@dataclass
class Action100MConfig(datasets.BuilderConfig):
    """A config of the dataset; `source` names the tree shards (file, folder, glob or hf:// path)."""

    source: str = OFFICIAL_SOURCE
    batch_size: int = 64


class Action100M(datasets.ArrowBasedBuilder):
    """The `tree` config and every flat config, derived from tree shards with pyarrow compute."""

    BUILDER_CONFIG_CLASS = Action100MConfig
    BUILDER_CONFIGS = [Action100MConfig(name=name) for name in ("tree",) + FLAT_CONFIGS]
    DEFAULT_CONFIG_NAME = DEFAULT_CONFIG

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            features=features_for(self.config.name),
            homepage="https://github.com/facebookresearch/Action100M",
        )

    def _split_generators(self, dl_manager):
        return [
            datasets.SplitGenerator(name=SPLIT, gen_kwargs={"files": tree_files(self.config.source)})
        ]

    def _generate_tables(self, files):
        for file_index, path in enumerate(files):
            for batch_index, batch in enumerate(
                iter_tree_batches(path, batch_size=self.config.batch_size)
            ):
                table = pa.Table.from_batches([batch])
                if self.config.name != "tree":
                    table = flat_table(table, self.config.name)
                yield f"{file_index}_{batch_index}", table
