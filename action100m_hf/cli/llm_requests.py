"""Run a file of conversations through the aggregate stage's LLM backend:
`python -m action100m_hf.cli.llm_requests --profile tiny --set aggregate.backend=vllm ...`.

It drives the vllm backend inside the separate vLLM environment (tests, GPU checks) with the same
profile and the same backend construction as the builder's aggregate stage.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    """{"schema", "conversations"} -> {"outputs"}: one text (or {"error"}) per conversation."""
    from action100m_hf.build.settings import load_profile
    from action100m_hf.build.stages.aggregate.stage import AggregateStage

    parser = argparse.ArgumentParser(prog="python -m action100m_hf.cli.llm_requests", description=main.__doc__)
    parser.add_argument("--profile", required=True, help="a profile name or YAML path (its aggregate section)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--requests", required=True, help="JSON file with schema and conversations")
    parser.add_argument("--out", required=True, help="JSON file to write the outputs to")
    args = parser.parse_args(argv)
    with open(args.requests, encoding="utf-8") as f:
        requests = json.load(f)
    profile = load_profile(args.profile, args.overrides)
    backend = AggregateStage(profile["aggregate"], profile.run).models
    outputs = backend.generate_json(requests["conversations"], requests["schema"])
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"outputs": [o if isinstance(o, str) else {"error": str(o)} for o in outputs]}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
