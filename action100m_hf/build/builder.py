"""`build()`: the one path from options to a Hub-layout folder, behind every entry point
(`action100m build`, `segment`, `annotate`, `builder/run.py`, the Python API).

Plan, take this rank's lock, run the stages over the rank's share, wait for every rank, merge on
rank 0.
"""

from __future__ import annotations

from collections.abc import Callable

from action100m_hf.build.executor import BuildOptions, make_stages, plan_build, run_rank
from action100m_hf.build.launch import be_quiet, progress_factory
from action100m_hf.build.lock import RankLock
from action100m_hf.build.merge import BuildSummary, merge
from action100m_hf.build.stage import Stage
from action100m_hf.build.store import WorkStore


def build(
    options: BuildOptions,
    stages: dict[str, Stage] | None = None,
    *,
    device: str | None = None,
    wait_for_everyone: Callable[[], None] = lambda: None,
    do_merge: bool = True,
) -> BuildSummary | None:
    """Run this rank's share of the build and, on rank 0, merge; returns the summary on the rank
    that merged (None on other ranks or without `do_merge`).

    `stages` replaces some of the profile's stages by name (tests inject models that fail on
    purpose); `device` is this process's accelerator when the stages' settings leave it null.
    """
    if options.quiet:
        be_quiet()
    progress = progress_factory(enabled=not options.quiet and options.rank == 0)
    plan = plan_build(options)
    store = WorkStore(options.output)
    built = make_stages(options.profile, device=device, progress=progress, given=stages)
    lock = RankLock(store.root, options.rank) if store.is_local else None
    if lock is not None:
        lock.acquire()
    try:
        run_rank(options, plan, built, progress)
        wait_for_everyone()
        if not do_merge or options.rank != 0:
            return None
        return merge(options, plan)
    finally:
        if lock is not None:
            lock.release()
