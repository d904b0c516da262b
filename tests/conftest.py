"""Shared fixtures: the official sample (skipped when absent) and small hand-built trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_SAMPLE = Path(
    os.environ.get(
        "ACTION100M_OFFICIAL_SAMPLE",
        REPO.parent / "shared" / "data" / "official-sample" / "hySSAAw4t24.json",
    )
)


def load_official_sample() -> dict:
    """The released sample as one tree row (its JSON is a dict of one-element column lists)."""
    columns = json.loads(OFFICIAL_SAMPLE.read_text())
    return {name: values[0] for name, values in columns.items()}


@pytest.fixture(scope="session")
def official_sample() -> dict:
    if not OFFICIAL_SAMPLE.exists():
        pytest.skip(f"official sample not present at {OFFICIAL_SAMPLE}")
    return load_official_sample()
