"""How a build process knows its place and talks to the user: its rank, world size and device
(explicit, or from `accelerate launch` / torchrun), the barrier before the merge, and progress
bars (none when quiet: third-party bars and logs included).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

#: Ranks can finish hours apart on a large run; the only collective (before the merge) waits.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class ProcessState:
    """This process's rank and world size, its device (None: the stages choose), and the
    collectives of a launched group (no-ops for a single process or explicit ranks)."""

    rank: int
    world_size: int
    device: str | None = None
    _accelerate: object = None

    def wait_for_everyone(self) -> None:
        if self._accelerate is not None:
            self._accelerate.wait_for_everyone()

    def main_process_first(self):
        return self._accelerate.main_process_first() if self._accelerate is not None else nullcontext()


def process_state(rank: int | None = None, world_size: int | None = None) -> ProcessState:
    """Explicit `rank`/`world_size` (e.g. a SLURM array) win; else accelerate's state when launched
    by `accelerate launch` or torchrun; else a single process."""
    if rank is not None:
        return ProcessState(rank, world_size or 1)
    if "WORLD_SIZE" not in os.environ and "ACCELERATE_MIXED_PRECISION" not in os.environ:
        return ProcessState(0, 1)
    import torch
    from accelerate import PartialState

    # PartialState picks gloo for CPU processes only when told so (accelerate's Accelerator
    # reads ACCELERATE_USE_CPU itself; PartialState does not).
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=use_cpu, timeout=BARRIER_TIMEOUT)
    return ProcessState(state.process_index, state.num_processes, str(state.device), state)


def be_quiet() -> None:
    """Silence every progress bar and info log of this process and the libraries it loads."""
    os.environ["TQDM_DISABLE"] = "1"  # every tqdm bar, ours and the libraries'
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for name in ("transformers", "datasets", "huggingface_hub", "accelerate", "vllm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def progress_factory(enabled: bool):
    """`progress(total=..., desc=..., unit=..., initial=...)` -> a tqdm bar on stderr (disabled
    when not `enabled`), with an ETA."""
    from tqdm.auto import tqdm

    def progress(**kwargs):
        return tqdm(disable=not enabled, dynamic_ncols=True, file=sys.stderr, **kwargs)

    return progress
