"""Run profiles of the builder: the models and settings of each stage, loaded from YAML and validated.

A profile is a file (`builder/profiles/<name>.yaml`, or any path) with one section per stage and
a `run` section. Every setting can be overridden with `section.key=value` (the value is read as
YAML). Unknown keys, wrong types and bad values raise `ProfileError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from action100m_hf.build.stages.caption import captioners

from action100m_hf.build.stages.segment import encoders

from action100m_hf.build.stages.aggregate import backends as llm_backends
from action100m_hf.errors import ProfileError

#: Where the named profiles live (the repository's builder/profiles folder).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class SegmentationSettings:
    """Stage 1: the frame encoder and the tree's minimum leaf length."""

    encoder: str = "vjepa2"
    model_id: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 4
    min_leaf: float = 0.5


@dataclass(frozen=True)
class CaptionSettings:
    """Stage 2: PerceptionLM (every node) and Llama-3.2-Vision (leaves) captioners."""

    profile: str = "paper"
    backend: str = "transformers"
    plm_model_id: str | None = None
    llama_model_id: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 1024
    num_frames: int = 32
    frame_size: int = 320


@dataclass(frozen=True)
class AnnotationSettings:
    """Stage 3: the LLM backend, its model, generation settings and the Self-Refine rounds.

    `global_depth` and `subtree_depth` limit the video's tree and the node's subtree in the
    prompt (`prompts.node_prompts`). `profile` picks `llm_backends.PROFILES[profile]`; `temperature`, `max_new_tokens` and
    `max_string_length`, when set, replace that profile's values. `backend_settings` go to
    `llm_backends.build_llm_backend` as keyword arguments (e.g. vllm's tensor_parallel_size).
    """

    backend: str = "vllm"
    model: str | None = None
    profile: str = "paper"
    rounds: int = 3
    global_depth: int = 3
    subtree_depth: int = 3
    temperature: float | None = None
    max_new_tokens: int | None = None
    max_string_length: int | None = None
    backend_settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunSettings:
    """Settings of the run itself (none of them changes a result)."""

    seed: int = 0
    stage3_batch_videos: int = 16
    oom_min_batch_size: int = 1


@dataclass(frozen=True)
class Profile:
    """A validated profile; `source` names the file it came from (with overrides, if any)."""

    name: str
    description: str
    stage1: SegmentationSettings
    stage2: CaptionSettings
    stage3: AnnotationSettings
    run: RunSettings
    source: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("source")
        return out


SECTIONS = {
    "stage1": SegmentationSettings,
    "stage2": CaptionSettings,
    "stage3": AnnotationSettings,
    "run": RunSettings,
}
TOP_LEVEL_KEYS = ("name", "description", *SECTIONS)

#: Allowed values of the settings that name a choice (as the stage modules define them).
CHOICES = {
    ("stage1", "encoder"): encoders.ENCODER_NAMES,
    ("stage2", "profile"): captioners.PROFILES,
    ("stage2", "backend"): captioners.BACKENDS,
    ("stage3", "backend"): llm_backends.BACKENDS,
    ("stage3", "profile"): tuple(llm_backends.PROFILES),
}
#: Settings that must be at least this value.
MINIMUM = {
    ("stage1", "batch_size"): 1,
    ("stage1", "min_leaf"): 0,
    ("stage2", "batch_size"): 1,
    ("stage2", "max_new_tokens"): 1,
    ("stage2", "num_frames"): 1,
    ("stage2", "frame_size"): 1,
    ("stage3", "rounds"): 1,
    ("stage3", "global_depth"): 0,
    ("stage3", "subtree_depth"): 0,
    ("stage3", "temperature"): 0,
    ("stage3", "max_new_tokens"): 1,
    ("stage3", "max_string_length"): 1,
    ("run", "stage3_batch_videos"): 1,
    ("run", "oom_min_batch_size"): 1,
}
#: Settings that change no output, left out of the cache keys of the stages.
NOT_IN_CACHE_KEY = {"device", "batch_size"}


def profile_path(name_or_path: str | Path) -> Path:
    """The file of a named profile (`paper`, `tiny`) or the path given."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"no profile {name_or_path!r}: known profiles are {', '.join(known)} (or give a YAML path)")
    return path


def load_profile(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Profile:
    """Load, override (`["stage2.num_frames=4", ...]`) and validate a profile."""
    path = profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"profile {path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile {path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path}: expected a mapping at the top level, got {type(raw).__name__}")
    source = str(path)
    for override in overrides:
        apply_override(raw, override, source)
    if overrides:
        source += " with " + " ".join(overrides)
    return validate_profile(raw, source)


def apply_override(raw: dict, override: str, source: str = "profile") -> None:
    """Set `section.key[.subkey]=value` in a raw profile dict (value parsed as YAML)."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ProfileError(f"override {override!r}: expected SECTION.KEY=VALUE, e.g. stage2.num_frames=8")
    if parts[0] not in SECTIONS:
        raise ProfileError(f"override {override!r}: unknown section {parts[0]!r}; sections are {', '.join(SECTIONS)}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ProfileError(f"override {override!r}: value is not valid YAML ({e})") from None
    target = raw.setdefault(parts[0], {})
    if not isinstance(target, dict):
        raise ProfileError(f"{source}: section {parts[0]!r} is not a mapping")
    for part in parts[1:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ProfileError(f"override {override!r}: {part!r} is not a mapping")
    target[parts[-1]] = value


def _check_type(value: Any, hint: Any) -> bool:
    allowed = get_args(hint) or (hint,)
    if isinstance(value, bool):  # bool is an int to isinstance; a flag is not a number here
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _section(raw: Any, name: str, cls: type, source: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: section {name!r} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ProfileError(
            f"{source}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"{name} takes {', '.join(names)}"
        )
    for key, value in raw.items():
        if not _check_type(value, hints[key]):
            raise ProfileError(
                f"{source}: {name}.{key} = {value!r} has type {type(value).__name__}; expected {hints[key]}"
            )
        choices = CHOICES.get((name, key))
        if choices and value not in choices:
            raise ProfileError(f"{source}: {name}.{key} = {value!r}; expected one of {', '.join(choices)}")
        minimum = MINIMUM.get((name, key))
        if minimum is not None and value is not None and value < minimum:
            raise ProfileError(f"{source}: {name}.{key} = {value!r}; must be at least {minimum}")
    values = {k: float(v) if hints[k] is float else v for k, v in raw.items()}
    return cls(**values)


def validate_profile(raw: dict, source: str = "profile") -> Profile:
    """A `Profile` from a raw mapping; `ProfileError` names the first bad key."""
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ProfileError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ProfileError(f"{source}: {key!r} must be a non-empty string")
    sections = {name: _section(raw.get(name), name, cls, source) for name, cls in SECTIONS.items()}
    return Profile(name=raw["name"], description=raw["description"], source=source, **sections)


def stage_keys(profile: Profile) -> dict[str, str]:
    """A short hash per stage of every setting that changes its output, chained through the stages.

    Stage 2's key covers stage 1's settings and stage 3's covers both, so a cached result is
    reused exactly when everything it depends on is unchanged; `device` and `batch_size` are
    left out because they change no output.
    """
    keys: dict[str, str] = {}
    previous = ""
    for stage in ("stage1", "stage2", "stage3"):
        settings = {k: v for k, v in asdict(getattr(profile, stage)).items() if k not in NOT_IN_CACHE_KEY}
        settings["seed"] = profile.run.seed
        text = json.dumps({"previous": previous, stage: settings}, sort_keys=True)
        previous = hashlib.sha1(text.encode()).hexdigest()[:12]
        keys[stage] = previous
    return keys
