"""`action100m build [VIDEOS ...]` (also `python builder/run.py`, `python -m action100m_hf build`):
Action100M-format annotations from videos, into a Hub-layout folder.

With no input it builds the embedded sample (generated videos, tiny profile, about a minute on
2 CPU cores). Under `accelerate launch` (or with --rank/--world-size, e.g. a SLURM array) each
process annotates its share of the videos alone; rank 0 merges once all are done. Rerunning the
same command resumes: results whose inputs and settings are unchanged are kept. `segment` and
`annotate` are this command on a subset of the stages, with the same options.
"""

from __future__ import annotations

import argparse

from action100m_hf.build.stages import STAGE_NAMES
from action100m_hf.data.layout import DEFAULT_FOLDER

#: Where the output goes by default: `load_dataset("action100m", "brief_action")` then loads it.
DEFAULT_OUTPUT = DEFAULT_FOLDER
#: The profile of the embedded sample (no input given).
SAMPLE_PROFILE = "tiny"

EPILOG = """\
examples:
  action100m build                                      # the embedded sample, tiny profile -> ./action100m
  action100m build videos/ --metadata meta.jsonl --profile paper -o out/mine
  accelerate launch --multi_gpu --num_processes 8 -m action100m_hf build videos/ --profile paper -o out/mine
  accelerate launch --multi_gpu --num_processes 2 builder/run.py videos/ --profile tiny   # CPU only (gloo)
  action100m build videos/ --profile paper --set aggregate.model=openai/gpt-oss-20b --stages aggregate
  action100m build --set caption.num_frames=4 --set aggregate.rounds=1 --quiet

SLURM array, no collective at all (tasks fail and rerun independently), then one merge:
  sbatch --array=0-63 --gpus=1 --wrap 'action100m build /fs/videos --profile paper -o /fs/out \\
      --rank $SLURM_ARRAY_TASK_ID --world-size 64 --no-merge'
  action100m build /fs/videos --profile paper -o /fs/out --rank 0 --world-size 64
"""


def add_build_arguments(p: argparse.ArgumentParser, *, stages: tuple[str, ...]) -> None:
    """The options every command that runs the executor shares (`build`, `segment`, `annotate`)."""
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                   help=f"output folder or fsspec URL (default ./{DEFAULT_OUTPUT})")  # fmt: skip
    p.add_argument("--metadata", help="JSONL, one object per video: video_uid, title, description, "
                   "transcript [{time, text}], view_count, like_count, upload_date, duration")  # fmt: skip
    p.add_argument("--profile", help=f"a profile name (paper, tiny) or a YAML path (default {SAMPLE_PROFILE} for "
                   "the embedded sample; required with inputs)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a profile setting, e.g. caption.num_frames=8 (repeatable)")  # fmt: skip
    p.add_argument("--stages", default=",".join(stages),
                   help=f"stages to compute, from {','.join(STAGE_NAMES)} (earlier ones must be done); default {','.join(stages)}")  # fmt: skip
    p.add_argument("--rank", type=int, help="this process's rank, without accelerate (with --world-size)")
    p.add_argument("--world-size", type=int, help="number of processes sharing the videos, without accelerate")
    p.add_argument("--no-merge", action="store_true", help="do not merge (another run merges later)")
    p.add_argument("--retry-failed", action="store_true", help="recompute the videos whose result holds an error")
    p.add_argument("--force", action="store_true", help="recompute every video of the stages run")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes (for logs)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any error was recorded")
    p.add_argument("--push-to-hub", metavar="REPO", help="after the merge, write the card and upload to this dataset repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: the repo is private")


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("inputs", nargs="*", help="video folders (searched recursively), globs, list files "
                   "(.txt, one path per line) or video files; none: the embedded sample")  # fmt: skip
    add_build_arguments(p, stages=STAGE_NAMES)


def parse_stages(text: str) -> tuple[str, ...]:
    from action100m_hf.build.inputs import BuildInputError

    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown or not stages:
        raise BuildInputError(f"--stages {text!r}: choose among {', '.join(STAGE_NAMES)}")
    return stages


def resolve_profile(args: argparse.Namespace, default: str | None = None):
    """The profile of `--profile` (or `default`) with the `--set` overrides; a clear error when
    the command needs one and none is given."""
    from action100m_hf.build.inputs import BuildInputError
    from action100m_hf.build.settings import load_profile

    if args.profile is None and default is None:
        raise BuildInputError("choose a profile: --profile paper (GPUs), --profile tiny (random models), or a YAML path")
    return load_profile(args.profile or default, args.overrides)


def run_build(args: argparse.Namespace, profile, state=None, **inputs) -> int:
    """Run the executor with the shared options, `profile` and `inputs` (BuildOptions fields:
    `inputs`, or `tree_source` and `video_root`); print the summary; push when asked."""
    from action100m_hf.build.builder import build
    from action100m_hf.build.executor import BuildOptions
    from action100m_hf.build.inputs import BuildInputError
    from action100m_hf.build.launch import process_state

    if (args.rank is None) != (args.world_size is None):
        raise BuildInputError("--rank and --world-size go together")
    stages = parse_stages(args.stages)
    state = state or process_state(args.rank, args.world_size)
    options = BuildOptions(
        output=args.output, profile=profile, metadata=args.metadata, stages=stages, rank=state.rank,
        world_size=state.world_size, quiet=args.quiet, retry_failed=args.retry_failed, force=args.force, **inputs,
    )  # fmt: skip
    summary = build(options, device=state.device, wait_for_everyone=state.wait_for_everyone, do_merge=not args.no_merge)
    if summary is None:
        return 0
    print(summary.format(), flush=True)
    if args.push_to_hub:
        from action100m_hf.hub.card import write_card
        from action100m_hf.hub.push import push_folder

        write_card(summary.output, repo_id=args.push_to_hub)
        # Without --private the repository's visibility is left as it is (new ones are public).
        push_folder(summary.output, args.push_to_hub, private=True if args.private else None, progress=print)
    return 1 if args.strict and summary.errors else 0


def run(args: argparse.Namespace) -> int:
    from action100m_hf.build.launch import process_state
    from action100m_hf.build.sample import ensure_sample_videos, sample_folder

    inputs = list(args.inputs)
    # Videos need a profile chosen for them; the embedded sample is the tiny profile's.
    profile = resolve_profile(args, None if inputs else SAMPLE_PROFILE)
    state = process_state(args.rank, args.world_size)
    if not inputs:
        # The main process makes the sample first; the others then find it made.
        with state.main_process_first():
            inputs = [str(ensure_sample_videos(sample_folder(args.output), seed=profile.run.seed))]
    return run_build(args, profile, state, inputs=inputs)
