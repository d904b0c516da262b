"""`action100m build [VIDEOS ...]` (also `python builder/run.py`): Action100M-format annotations from videos.

With no input it builds the embedded sample (generated videos, tiny profile, a few minutes on
2 CPU cores). Under `accelerate launch` (or with --rank/--world-size, e.g. a SLURM array) each
process annotates its share of the videos alone; rank 0 merges once all are done. Rerunning
the same command resumes: finished videos and stages are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

from action100m_hf.errors import Action100MError
from action100m_hf.build.pipeline import STAGES, BuildOptions, StageModels, build, ensure_sample_videos
from action100m_hf.build.settings import load_profile

DEFAULT_OUTPUT = "out/action100m-build"
#: The profile of the embedded sample (no input given).
SAMPLE_PROFILE = "tiny"
#: Ranks can finish hours apart on a large run; the only collective (before the merge) waits.
BARRIER_TIMEOUT = timedelta(days=7)

EPILOG = """\
examples:
  python builder/run.py                                  # the embedded sample, tiny profile
  python builder/run.py videos/ --metadata meta.jsonl --profile paper -o out/mine
  accelerate launch --multi_gpu --num_processes 8 builder/run.py videos/ --profile paper -o out/mine
  accelerate launch --multi_gpu --num_processes 2 builder/run.py videos/ --profile tiny   # CPU only:
      # gloo; accelerate's --cpu starts a single process unless MPI is set up
  python builder/run.py videos/ --profile paper --set stage3.model=openai/gpt-oss-20b --stages 3
  python builder/run.py --set stage2.num_frames=4 --set run.stage3_batch_videos=4 --quiet

SLURM, accelerate across nodes (8 GPUs each; a dead node stops the job, a resubmission resumes):
  srun --nodes=4 --ntasks-per-node=1 bash -c 'accelerate launch --multi_gpu \\
      --num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID --num_processes $((SLURM_NNODES * 8)) \\
      --main_process_ip $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1) --main_process_port 29500 \\
      builder/run.py /fs/videos --profile paper -o /fs/out'
SLURM array, no collective at all (tasks fail and rerun independently), then one merge:
  sbatch --array=0-63 --gpus=1 --wrap 'python builder/run.py /fs/videos --profile paper -o /fs/out \\
      --rank $SLURM_ARRAY_TASK_ID --world-size 64 --no-merge'
  python builder/run.py /fs/videos --profile paper -o /fs/out --rank 0 --world-size 64
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("inputs", nargs="*", help="video folders (searched recursively), globs, list files "
                   "(.txt, one path per line) or video files; none: the embedded sample")  # fmt: skip
    p.add_argument("--metadata", help="JSONL, one object per video: video_uid, title, description, "
                   "transcript [{time, text}], view_count, like_count, upload_date, duration")  # fmt: skip
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"output folder or fsspec URL (default {DEFAULT_OUTPUT})")
    p.add_argument("--profile", help=f"paper, tiny or a YAML path (default {SAMPLE_PROFILE} for the embedded "
                   "sample; required with inputs)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a profile setting, e.g. stage2.num_frames=8 (repeatable)")  # fmt: skip
    p.add_argument("--stages", default="1,2,3", help="stages to compute, e.g. 1,2 or 3 (earlier ones must be cached)")
    p.add_argument("--rank", type=int, help="this process's rank, without accelerate (with --world-size)")
    p.add_argument("--world-size", type=int, help="number of processes sharing the videos, without accelerate")
    p.add_argument("--no-merge", action="store_true", help="do not merge (another run merges later)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes (for logs)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any error was recorded")
    p.add_argument("--push-to-hub", metavar="REPO", help="after the merge, write the card and upload to this dataset repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")


def _check_args(args: argparse.Namespace) -> None:
    p = argparse.ArgumentParser(prog="action100m build")
    if (args.rank is None) != (args.world_size is None):
        p.error("--rank and --world-size go together")
    try:
        args.stages = tuple(f"stage{int(s)}" for s in args.stages.split(",") if s.strip())
    except ValueError:
        p.error(f"--stages {args.stages!r}: expected numbers such as 1,2,3")
    if not args.stages or not set(args.stages) <= set(STAGES):
        p.error(f"--stages {args.stages!r}: choose among 1, 2 and 3")
    if args.inputs and args.profile is None:
        p.error("choose a profile for your videos: --profile paper (GPUs), --profile tiny (random models), or a YAML path")


def _process_state(args: argparse.Namespace):
    """(accelerate state or None, rank, world size): explicit --rank wins over accelerate."""
    if args.rank is not None:
        return None, args.rank, args.world_size
    import torch
    from accelerate import PartialState

    # PartialState picks gloo for CPU processes only when told so (accelerate's Accelerator
    # reads ACCELERATE_USE_CPU itself; PartialState does not).
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=use_cpu, timeout=BARRIER_TIMEOUT)
    return state, state.process_index, state.num_processes


def _sample_folder(output: str) -> Path:
    """Where the embedded sample's videos go: in the output's work folder when it is local."""
    if "://" in output and not output.startswith("file://"):
        import tempfile

        return Path(tempfile.gettempdir()) / "action100m-sample"
    return Path(output.removeprefix("file://")) / "_work" / "sample"


def publish(folder: str, repo_id: str, profile, inputs: list[str], private: bool) -> None:
    """The dataset card with this build's profile, then the upload (`card` and `push` modules)."""
    from action100m_hf.hub.card import write_card
    from action100m_hf.hub.push import push_folder

    stage1, stage2, stage3 = profile.stage1, profile.stage2, profile.stage3
    write_card(folder, {
        "repo_id": repo_id,
        "profile": f"{profile.name}: {profile.description}",
        "models": {
            "stage 1 encoder": stage1.model_id or stage1.encoder,
            "stage 2 PerceptionLM": stage2.plm_model_id or f"{stage2.profile} default",
            "stage 2 Llama-3.2-Vision": stage2.llama_model_id or f"{stage2.profile} default",
            "stage 3 LLM": f"{stage3.model or stage3.profile + ' default'} ({stage3.backend})",
        },
        "settings": profile.as_dict(),
        "source": ", ".join(inputs),
    })
    push_folder(folder, repo_id, private=private)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    try:
        profile = load_profile(args.profile or SAMPLE_PROFILE, args.overrides)
        state, rank, world_size = _process_state(args)
        inputs = list(args.inputs)
        if not inputs:
            # The main process makes the sample first; the others then find it made.
            with state.main_process_first() if state is not None else nullcontext():
                inputs = [str(ensure_sample_videos(_sample_folder(args.output), seed=profile.run.seed))]
        options = BuildOptions(
            output=args.output, inputs=inputs, profile=profile, metadata=args.metadata,
            stages=args.stages, rank=rank, world_size=world_size, quiet=args.quiet,
        )
        device = str(state.device) if state is not None else None
        summary = build(
            options,
            StageModels(profile, device=device),
            wait_for_everyone=state.wait_for_everyone if state is not None else (lambda: None),
            do_merge=not args.no_merge,
        )
        if summary is None:
            return 0
        print(summary.format(), flush=True)
        if args.push_to_hub:
            publish(summary.output, args.push_to_hub, profile, inputs, args.private)
    except Action100MError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if args.strict and summary.errors else 0

