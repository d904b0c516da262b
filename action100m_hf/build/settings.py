"""Profiles: the settings of every stage and of the run, from YAML only, validated.

A profile is a YAML file (`paper` and `tiny` ship in `action100m_hf/build/profiles/`, or any path)
with `name`, `description`, an optional `base` (another profile it extends) and one section per
stage (`segment`, `caption`, `aggregate`) plus `run`. The YAML is the only source of default values:
the settings classes declare types and bounds, not values, and a key missing after `base` and
overrides is an error naming it. `section.key[.subkey]=value` overrides any setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from action100m_hf.errors import ProfileError

#: Where the named profiles live (package data).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
#: The value of a model setting that means "a seeded random model of the same architecture".
TINY_MODEL = "tiny"


def setting(*, minimum: float | None = None, choices: tuple | None = None, result: bool = True):
    """A settings field: `minimum` and `choices` are checked on load; `result=False` marks settings
    that change no output (devices, batch sizes), left out of the stages' cache keys."""
    return dataclasses.field(metadata={"minimum": minimum, "choices": choices, "result": result})


@dataclass(frozen=True)
class RunSettings:
    """Settings of the run itself, shared by every stage."""

    seed: int = setting(minimum=0)
    #: The out-of-memory policy halves a stage's batch sizes down to this, then records an error.
    oom_min_batch_size: int = setting(minimum=1, result=False)


@dataclass(frozen=True)
class Profile:
    """A validated profile: `sections` maps each stage name and "run" to its settings object.

    `source` names the file it came from, with the overrides applied.
    """

    name: str
    description: str
    sections: dict[str, Any]
    source: str = ""
    overrides: tuple[str, ...] = ()

    def __getitem__(self, section: str):
        return self.sections[section]

    @property
    def run(self) -> RunSettings:
        return self.sections["run"]

    def as_dict(self) -> dict:
        """The resolved profile as plain data, in the YAML file's layout (no `base`)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        out.update({name: dataclasses.asdict(s) for name, s in self.sections.items()})
        return out

    def to_yaml(self) -> str:
        """The resolved profile as YAML: `load_profile` of this text gives the same profile."""
        return yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True)


def section_classes() -> dict[str, type]:
    """Each section's settings class: the stages' (in pipeline order), then `run`."""
    from action100m_hf.build.stages import STAGES

    return {**{stage.name: stage.Settings for stage in STAGES}, "run": RunSettings}


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


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"profile {path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile {path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _merged(base: dict, top: dict) -> dict:
    """`top` over `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The raw profile at `path` with its `base` chain merged underneath."""
    if path.resolve() in seen:
        raise ProfileError(f"profile {path}: `base` chain loops back to itself")
    raw = _read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ProfileError(f"profile {path}: `base` must name a profile or a YAML path")
    base_path = profile_path(base if Path(base).is_absolute() or base in _named() else path.parent / base)
    return _merged(_resolve(base_path, (*seen, path.resolve())), raw)


def _named() -> set[str]:
    return {p.stem for p in PROFILE_DIR.glob("*.yaml")}


def load_profile(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Profile:
    """Load a profile (name or path), apply `section.key=value` overrides, validate it."""
    path = profile_path(name_or_path)
    raw = _resolve(path)
    for override in overrides:
        apply_override(raw, override, str(path))
    source = str(path) + (" with " + " ".join(overrides) if overrides else "")
    return dataclasses.replace(validate_profile(raw, source), overrides=tuple(overrides))


def apply_override(raw: dict, override: str, source: str = "profile") -> None:
    """Set `section.key[.subkey]=value` in a raw profile dict (value parsed as YAML)."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ProfileError(f"override {override!r}: expected SECTION.KEY=VALUE, e.g. caption.num_frames=8")
    sections = section_classes()
    if parts[0] not in sections:
        raise ProfileError(f"override {override!r}: unknown section {parts[0]!r}; sections are {', '.join(sections)}")
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
    allowed = tuple(getattr(a, "__origin__", a) for a in (get_args(hint) or (hint,)))
    if isinstance(value, bool):  # bool is an int to isinstance; a flag is not a number here
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _section(raw: Any, name: str, cls: type, source: str):
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: section {name!r} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ProfileError(
            f"{source}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; {name} takes {', '.join(names)}"
        )
    missing = [k for k in names if k not in raw]
    if missing:
        raise ProfileError(f"{source}: section {name!r} lacks {', '.join(f'{name}.{k}' for k in missing)}")
    for f in fields(cls):
        value, hint = raw[f.name], hints[f.name]
        if not _check_type(value, hint):
            raise ProfileError(f"{source}: {name}.{f.name} = {value!r} has type {type(value).__name__}; expected {hint}")
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if choices and value is not None and value not in choices:
            raise ProfileError(f"{source}: {name}.{f.name} = {value!r}; expected one of {', '.join(map(str, choices))}")
        if minimum is not None and value is not None and value < minimum:
            raise ProfileError(f"{source}: {name}.{f.name} = {value!r}; must be at least {minimum}")
    values = {k: float(v) if hints[k] is float and v is not None else v for k, v in raw.items()}
    settings = cls(**values)
    check = getattr(settings, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ProfileError(f"{source}: section {name!r}: {e}") from None
    return settings


def validate_profile(raw: dict, source: str = "profile") -> Profile:
    """A `Profile` from a raw mapping (base already merged); `ProfileError` names the first bad key."""
    sections = section_classes()
    top = ("name", "description", *sections)
    unknown = sorted(set(raw) - set(top))
    if unknown:
        raise ProfileError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(top)}")
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ProfileError(f"{source}: {key!r} must be a non-empty string")
    missing = [name for name in sections if name not in raw]
    if missing:
        raise ProfileError(f"{source}: missing section(s) {', '.join(missing)}")
    parsed = {name: _section(raw[name], name, cls, source) for name, cls in sections.items()}
    return Profile(name=raw["name"], description=raw["description"], sections=parsed, source=source)


def result_settings(settings) -> dict:
    """The settings of a section that change its output (the `result=False` ones left out)."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.metadata.get("result", True)}


def stage_keys(profile: Profile, stages: list[str] | tuple[str, ...] | None = None) -> dict[str, str]:
    """A short hash per stage of every setting that changes its output, chained through `stages`
    (default: the whole pipeline; a build that starts from tree rows starts the chain later).

    A stage's key covers the earlier stages' settings and the run's seed, so a cached result is
    reused exactly when everything it depends on is unchanged; devices and batch sizes are left
    out because they change no output.
    """
    from action100m_hf.build.stages import STAGE_NAMES

    keys: dict[str, str] = {}
    previous = json.dumps(result_settings(profile.run), sort_keys=True)
    for name in stages or STAGE_NAMES:
        text = json.dumps({"previous": previous, name: result_settings(profile[name])}, sort_keys=True)
        previous = hashlib.sha1(text.encode()).hexdigest()[:12]
        keys[name] = previous
    return keys
