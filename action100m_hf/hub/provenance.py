"""Where a Hub-layout folder's data came from, as its dataset card states it.

Three origins, merged by `card_settings`: the official release (license and source fields of
facebook/action100m-preview when the trees come from it), a build (`build/profile.yaml`: the
resolved profile and its models; `build/summary.json`: counts and inputs, both written by the
builder at every merge), and what a card was written with before, kept in `assets/card.yaml` so
that `action100m card FOLDER` run later (or by `resample`) keeps the provenance of the first card.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from action100m_hf.files import write_atomic
from action100m_hf.build.settings import TINY_MODEL
from action100m_hf.data.layout import BUILD_PROFILE as PROFILE_FILE
from action100m_hf.data.layout import BUILD_SUMMARY as SUMMARY_FILE
from action100m_hf.errors import Action100MError

#: The settings a card was written with, kept beside its plots.
SETTINGS_FILE = "assets/card.yaml"
#: The official release; a source naming it (hf:// path, repo id or a Hub cache folder) is the release.
RELEASE_REPO = "facebook/action100m-preview"
RELEASE_MARKERS = (RELEASE_REPO, "datasets--facebook--action100m-preview")

DEFAULT_SETTINGS: dict = {
    "pretty_name": "Action100M-format video action dataset",
    "description": (
        "Hierarchical, temporally localized action annotations of videos in the format of "
        "Action100M, built with the open `action100m-hf` toolkit."
    ),
    "repo_id": None,  # the Hub repository the card's examples load from; None: the folder's path
    "license": "other",
    "license_name": "fair-noncommercial-research-license",
    "license_link": "https://huggingface.co/datasets/facebook/action100m-preview",
    "source": "not recorded",  # where the trees (or the videos they describe) came from
    "source_datasets": [],  # Hub datasets the data derives from (the card's `source_datasets`)
    "profile": "not recorded",
    "models": {},  # role -> model id
    "settings": {},  # the run's settings: a dict, or YAML text shown as is
    "summary": None,  # the build's summary (build/summary.json)
    "code_version": None,  # None: this package's version
}
#: The settings `assets/card.yaml` keeps; the build's are read again from `build/` at every refresh.
KEPT_SETTINGS = ("pretty_name", "description", "repo_id", "license", "license_name", "license_link",
                 "source", "source_datasets")

#: What the release's trees were made with (the paper, section 3 and SPEC.md).
RELEASE_MODELS = {
    "segmentation encoder (stage segment)": "facebook/vjepa2-vitg-fpc64-384",
    "segment captions (stage caption)": "facebook/Perception-LM-3B",
    "leaf captions from the middle frame (stage caption)": "meta-llama/Llama-3.2-11B-Vision",
    "structured annotation, 3 rounds of Self-Refine (stage aggregate)": "openai/gpt-oss-120b",
}


class CardError(Action100MError):
    """A dataset card, the folder it describes or its settings that fail validation; the message
    says why and names the file."""


def is_release_source(source: str | None) -> bool:
    """True when `source` names the official release (its hf:// path, repo id or Hub cache folder)."""
    return bool(source) and any(marker in str(source) for marker in RELEASE_MARKERS)


def release_settings(source: str) -> dict:
    """The release's license and provenance, for trees read from `source`."""
    return {
        "license": "other",
        "license_name": "fair-noncommercial-research-license",
        "license_link": f"https://huggingface.co/datasets/{RELEASE_REPO}",
        "source": f"the official Action100M release ({RELEASE_REPO}), read from {source}",
        "source_datasets": [RELEASE_REPO],
    }


def _model_row(value) -> str | None:
    if value in (None, ""):
        return None
    return f"{value} (a seeded random stand-in model)" if value == TINY_MODEL else str(value)


def profile_models(profile: dict) -> dict[str, str]:
    """Role -> model of a resolved build profile (`segment`, `caption`, `aggregate` sections)."""
    segment, caption, aggregate = (profile.get(s) or {} for s in ("segment", "caption", "aggregate"))
    encoder = segment.get("encoder")
    rows = {
        # The pixel encoder has no model; V-JEPA 2 is its `model` (an id, a folder or "tiny").
        "segmentation encoder (stage segment)": _model_row(segment.get("model") if encoder == "vjepa2" else encoder),
        "segment captions (stage caption)": _model_row(caption.get("plm_model")),
        "leaf captions from the middle frame (stage caption)": _model_row(caption.get("llama_model")),
        "structured annotation (stage aggregate)": _model_row(aggregate.get("model")),
    }
    if rows["structured annotation (stage aggregate)"] and aggregate.get("backend"):
        rows["structured annotation (stage aggregate)"] += f", backend {aggregate['backend']}"
    return {role: model for role, model in rows.items() if model}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise CardError(f"{path}: unreadable ({e})") from e
    if not isinstance(data, dict):
        raise CardError(f"{path}: expected a YAML mapping, found {type(data).__name__}")
    return data


def build_settings(folder: Path) -> dict:
    """The card settings a build left in `folder/build/` (none when it holds no profile)."""
    out: dict = {}
    profile_path = folder / PROFILE_FILE
    if profile_path.is_file():
        profile = _read_yaml(profile_path)
        name, description = profile.get("name"), " ".join(str(profile.get("description") or "").split())
        out["profile"] = f"{name}: {description}" if name and description else str(name or "unnamed profile")
        out["models"] = profile_models(profile)
        out["settings"] = profile_path.read_text(encoding="utf-8").strip()
    summary_path = folder / SUMMARY_FILE
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CardError(f"{summary_path}: unreadable ({e})") from e
        out["summary"] = summary
        inputs = summary.get("inputs") if isinstance(summary, dict) else None
        if isinstance(inputs, list) and inputs:
            shown = ", ".join(str(i) for i in inputs[:5])
            out["source"] = f"{len(inputs):,} input(s) of the build: {shown}" + (" …" if len(inputs) > 5 else "")
        elif isinstance(summary, dict) and isinstance(summary.get("videos"), int):
            out["source"] = f"{summary['videos']:,} videos given to the build"
    return out


def kept_settings(folder: Path) -> dict:
    """The settings stored by the previous card of `folder` (`assets/card.yaml`), if any."""
    path = folder / SETTINGS_FILE
    return {k: v for k, v in _read_yaml(path).items() if k in KEPT_SETTINGS} if path.is_file() else {}


def save_settings(folder: Path, settings: dict) -> Path:
    """Store the settings of a card that neither the defaults nor `build/` give (written atomically)."""
    path = folder / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    derived = {**DEFAULT_SETTINGS, **build_settings(folder)}  # read again at every refresh
    kept = {k: settings[k] for k in KEPT_SETTINGS if settings.get(k) != derived[k]}
    return write_atomic(
        path,
        "# The settings of this folder's dataset card; `action100m card FOLDER` keeps them.\n"
        + yaml.safe_dump(kept, sort_keys=False, allow_unicode=True),
    )


def _within(folder: Path, source: str | None) -> bool:
    if not source or ("://" in source and not source.startswith("file://")):
        return False
    path = Path(source.removeprefix("file://")).resolve()
    return path == folder.resolve() or folder.resolve() in path.parents


def card_settings(folder: str | Path, overrides: dict | None = None, **arguments) -> dict:
    """Every setting of `folder`'s card: defaults < the build's (`build/`) < the previous card's
    < `overrides` and the non-None keyword `arguments`. A `source` that names the release brings
    the release's license and source fields; a source inside `folder` (flattening or resampling
    the folder's own trees) changes nothing."""
    folder = Path(folder)
    given = {**(overrides or {}), **{k: v for k, v in arguments.items() if v is not None}}
    unknown = sorted(set(given) - set(DEFAULT_SETTINGS))
    if unknown:
        raise CardError(
            f"unknown card setting(s) {', '.join(unknown)}; the settings are: {', '.join(DEFAULT_SETTINGS)}"
        )
    if _within(folder, given.get("source")):  # trees read from the folder itself: provenance unchanged
        del given["source"]
    settings = {**DEFAULT_SETTINGS, **build_settings(folder), **kept_settings(folder)}
    if is_release_source(given.get("source")):
        settings.update(release_settings(given.pop("source")))
    if RELEASE_REPO in settings["source_datasets"]:
        settings.update({k: v for k, v in release_settings("").items() if k.startswith("license")})
        if not (folder / PROFILE_FILE).is_file():
            settings.update(profile="the paper's pipeline (Meta FAIR)", models=dict(RELEASE_MODELS))
    settings.update(given)
    if settings["code_version"] is None:
        from action100m_hf import __version__

        settings["code_version"] = f"action100m-hf {__version__}"
    return settings
