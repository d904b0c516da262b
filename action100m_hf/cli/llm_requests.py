"""Run a file of conversations through a stage-3 LLM backend: `python -m action100m_hf.cli.llm_requests`.

It drives the vllm backend inside the separate vLLM environment (tests, GPU checks), so it imports
only the standard library and the backends module at load time.
"""

from __future__ import annotations

import argparse
import json
import sys

from action100m_hf.build.stages.aggregate.backends import BACKENDS, PROFILES, build_llm_backend


def main(argv: list[str] | None = None) -> int:
    """Run a file of conversations through a backend: {"schema", "conversations"} -> {"outputs"}.

    Used to drive the vllm backend inside its own environment (tests, GPU checks).
    """
    parser = argparse.ArgumentParser(prog="python -m action100m_hf.cli.llm_requests", description=main.__doc__)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--model")
    parser.add_argument("--profile", choices=list(PROFILES), default="paper")
    parser.add_argument("--settings", default="{}", help="JSON object of backend settings")
    parser.add_argument("--requests", required=True, help="JSON file with schema and conversations")
    parser.add_argument("--out", required=True, help="JSON file to write the outputs to")
    args = parser.parse_args(argv)
    with open(args.requests, encoding="utf-8") as f:
        requests = json.load(f)
    backend = build_llm_backend(
        args.backend, model=args.model, profile=args.profile, **json.loads(args.settings)
    )
    outputs = backend.generate_json(requests["conversations"], requests["schema"])
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"outputs": [o if isinstance(o, str) else {"error": str(o)} for o in outputs]}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
