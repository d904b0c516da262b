"""The data contract: Arrow schemas and `datasets.Features` of every config, and format constants.

This is the one place where the released format (facebook/action100m-preview) and the flat
views derived from it are defined. Every reader and writer in the project uses these schemas,
so written Parquet carries exactly these types (`level` int16, `start`/`end` float32,
transcript `time` string, `duration` whole seconds).
"""

from __future__ import annotations

import pyarrow as pa

from action100m_hf.errors import UnknownConfigError

# --- format constants ------------------------------------------------------------------

#: Internal nodes at least this long (seconds) get a stage-3 `gpt` annotation.
GPT_MIN_DURATION = 4.0
#: Node times are rounded to this many decimals before they enter a node id.
TIME_DECIMALS = 2
#: The text the release uses where there is no visible actor or physical action.
NA_TEXT = "N/A"
#: Every sampled frame of stage 1 is this many native frames apart.
FRAME_STRIDE = 4
#: V-JEPA 2 windows: sampled frames per window, and sampled frames between window starts.
WINDOW_FRAMES, WINDOW_STRIDE = 64, 8
#: The split every config has.
SPLIT = "train"
#: The official preview's tree shards.
OFFICIAL_SOURCE = "hf://datasets/facebook/action100m-preview/data/*.parquet"

# --- the released tree rows --------------------------------------------------------------

TRANSCRIPT_TYPE = pa.list_(pa.struct([("time", pa.string()), ("text", pa.string())]))

METADATA_TYPE = pa.struct(
    [
        ("title", pa.string()),
        ("description", pa.string()),
        ("view_count", pa.int64()),
        ("like_count", pa.int64()),
        ("duration", pa.int64()),
        ("upload_date", pa.string()),
        ("transcript", TRANSCRIPT_TYPE),
    ]
)

GPT_TYPE = pa.struct(
    [
        ("summary", pa.struct([("brief", pa.string()), ("detailed", pa.string())])),
        (
            "action",
            pa.struct([("brief", pa.string()), ("detailed", pa.string()), ("actor", pa.string())]),
        ),
    ]
)

NODE_TYPE = pa.struct(
    [
        ("node_id", pa.string()),
        ("parent_id", pa.string()),
        ("level", pa.int16()),
        ("start", pa.float32()),
        ("end", pa.float32()),
        ("plm_action", pa.string()),
        ("plm_caption", pa.string()),
        ("llama3_caption", pa.string()),
        ("gpt", GPT_TYPE),
    ]
)

TREE_SCHEMA = pa.schema(
    [("video_uid", pa.string()), ("metadata", METADATA_TYPE), ("nodes", pa.list_(NODE_TYPE))]
)

#: Field names of a node, in schema order.
NODE_FIELDS = tuple(f.name for f in NODE_TYPE)
#: Field names of the metadata struct, in schema order.
METADATA_FIELDS = tuple(f.name for f in METADATA_TYPE)

# --- flat configs: one row per segment ---------------------------------------------------

SEGMENT_KEY_FIELDS = [
    ("video_uid", pa.string()),
    ("node_id", pa.string()),
    ("parent_id", pa.string()),
    ("level", pa.int16()),
    ("start", pa.float32()),
    ("end", pa.float32()),
    ("duration", pa.float32()),
]

#: Flat config -> (text column paths inside a node, as (output name, path)).
#: `path` is a tuple of struct field names starting at the node.
FLAT_TEXT_FIELDS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "brief_action": [("text", ("gpt", "action", "brief")), ("actor", ("gpt", "action", "actor"))],
    "detailed_action": [
        ("text", ("gpt", "action", "detailed")),
        ("actor", ("gpt", "action", "actor")),
    ],
    "brief_caption": [("text", ("gpt", "summary", "brief"))],
    "detailed_caption": [("text", ("gpt", "summary", "detailed"))],
    "segments": [
        ("plm_caption", ("plm_caption",)),
        ("plm_action", ("plm_action",)),
        ("llama3_caption", ("llama3_caption",)),
        ("summary_brief", ("gpt", "summary", "brief")),
        ("summary_detailed", ("gpt", "summary", "detailed")),
        ("action_brief", ("gpt", "action", "brief")),
        ("action_detailed", ("gpt", "action", "detailed")),
        ("actor", ("gpt", "action", "actor")),
    ],
}
#: Flat configs whose rows need a `gpt` annotation (only annotated nodes appear).
ANNOTATION_CONFIGS = ("brief_action", "detailed_action", "brief_caption", "detailed_caption")
#: Flat configs that leave out nodes whose `gpt.action.brief` is "N/A".
ACTION_CONFIGS = ("brief_action", "detailed_action")
FLAT_CONFIGS = ("brief_action", "detailed_action", "brief_caption", "detailed_caption", "segments")

#: k of each resampled config.
RESAMPLED_K = {"resampled_k1e3": 1_000, "resampled_k1e4": 10_000, "resampled_k1e5": 100_000}
RESAMPLED_CONFIGS = tuple(RESAMPLED_K)

RESAMPLED_SCHEMA = pa.schema(
    [
        ("sample_index", pa.int64()),
        ("video_uid", pa.string()),
        ("node_id", pa.string()),
        ("start", pa.float32()),
        ("end", pa.float32()),
        ("duration", pa.float32()),
        ("text", pa.string()),
        ("cluster_id", pa.int32()),
        ("cluster_size", pa.int32()),
    ]
)

#: The errors table a build writes beside its outputs.
ERRORS_SCHEMA = pa.schema(
    [
        ("video_uid", pa.string()),
        ("stage", pa.string()),
        ("node_id", pa.string()),
        ("error", pa.string()),
    ]
)

DEFAULT_CONFIG = "brief_action"


def _flat_schema(config: str) -> pa.Schema:
    return pa.schema(
        SEGMENT_KEY_FIELDS + [(name, pa.string()) for name, _ in FLAT_TEXT_FIELDS[config]]
    )


SCHEMAS: dict[str, pa.Schema] = {"tree": TREE_SCHEMA}
SCHEMAS.update({config: _flat_schema(config) for config in FLAT_CONFIGS})
SCHEMAS.update({config: RESAMPLED_SCHEMA for config in RESAMPLED_CONFIGS})

#: Every config name, in the order the card lists them.
CONFIG_NAMES = tuple(SCHEMAS)


def schema_for(config: str) -> pa.Schema:
    """The Arrow schema of `config`; an `UnknownConfigError` lists the valid names."""
    try:
        return SCHEMAS[config]
    except KeyError:
        raise UnknownConfigError(
            f"unknown config {config!r}; the configs are: {', '.join(CONFIG_NAMES)}"
        ) from None


def features_for(config: str):
    """The `datasets.Features` matching `schema_for(config)` exactly."""
    import datasets

    return datasets.Features.from_arrow_schema(schema_for(config))


def tree_table(rows: list[dict]) -> pa.Table:
    """A `tree` table from row dicts (`video_uid`, `metadata`, `nodes`), cast to the contract."""
    return pa.Table.from_pylist(rows, schema=TREE_SCHEMA)
