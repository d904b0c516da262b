"""`action100m configs`: the configs and their columns."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    pass


def run(args) -> int:
    from action100m_hf.data.schema import CONFIG_NAMES, DEFAULT_CONFIG, schema_for

    for name in CONFIG_NAMES:
        mark = " (default)" if name == DEFAULT_CONFIG else ""
        print(f"{name}{mark}: {', '.join(schema_for(name).names)}")
    return 0
