"""Stage-3 prompt size and prefix-cache reuse per video, on the official sample.

Tokens are gpt-oss's own (o200k + harmony, rendered as gpt-oss sees the conversation, reasoning
effort high) through the `openai_harmony` package (PyPI `oss-harmony`). The cache model is
vLLM's: prompts are cut into blocks of 16 tokens and a block is reused when the whole prefix up
to it was seen before (ideal cache, no eviction). Self-Refine rounds 2 and 3 use the released
`gpt` of each node as the draft. Baseline: the same content in the release's order (input
blocks, then the whole task text, whose first sentence names the node's times).

    python benchmarks/bench_prompts.py [SAMPLE.json] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from action100m_hf.build.settings import load_profile  # noqa: E402
from action100m_hf.build.stages.aggregate import prompts  # noqa: E402
from action100m_hf.data.tree import annotatable  # noqa: E402

DEFAULT_SAMPLE = Path(
    os.environ.get(
        "ACTION100M_OFFICIAL_SAMPLE", REPO.parent / "shared" / "data" / "official-sample" / "hySSAAw4t24.json"
    )
)
BLOCK = 16  # vLLM's default KV-cache block size (tokens)
#: The paper profile's prompt depths.
DEPTHS = {k: getattr(load_profile("paper")["aggregate"], k) for k in ("global_depth", "subtree_depth")}


class HarmonyTokens:
    """Token ids of a chat as gpt-oss sees it (system message with reasoning effort high)."""

    def __init__(self):
        try:
            import openai_harmony as harmony
        except ImportError:
            sys.exit("bench_prompts needs the package oss-harmony (pip install oss-harmony)")
        self.h = harmony
        self.encoding = harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
        # A fixed date keeps the system message (and so the numbers) the same on every run.
        self.system = harmony.Message.from_role_and_content(
            harmony.Role.SYSTEM,
            harmony.SystemContent.new()
            .with_reasoning_effort(harmony.ReasoningEffort.HIGH)
            .with_conversation_start_date(date(2026, 1, 1).isoformat()),
        )

    def chat(self, conversation: list[dict]) -> list[int]:
        h = self.h
        messages = [self.system]
        for turn in conversation:
            if turn["role"] == "user":
                messages.append(h.Message.from_role_and_content(h.Role.USER, turn["content"]))
            else:
                messages.append(
                    h.Message.from_role_and_content(h.Role.ASSISTANT, turn["content"]).with_channel("final")
                )
        conversation_ = h.Conversation.from_messages(messages)
        return self.encoding.render_conversation_for_completion(conversation_, h.Role.ASSISTANT)


class PrefixCache:
    """vLLM-style block reuse: a block hits when its whole prefix chain was stored before."""

    def __init__(self, block: int = BLOCK):
        self.block = block
        self.seen: set[int] = set()

    def add(self, tokens: list[int]) -> int:
        """Store the prompt's full blocks; return how many of its tokens were already cached."""
        chain, hits, hitting = 0, 0, True
        for first in range(0, len(tokens) - self.block + 1, self.block):
            chain = hash((chain, tuple(tokens[first : first + self.block])))
            if hitting and chain in self.seen:
                hits += self.block
            else:
                hitting = False
                self.seen.add(chain)
        return hits


def measure(row: dict, layout: str, tokens: HarmonyTokens, rounds: int = 3) -> dict:
    schema = prompts.response_schema(None)
    nodes = row["nodes"]
    targets = annotatable(nodes)
    if layout == "prefix_first":
        first_texts = [p.text for p in prompts.node_prompts(row["metadata"], nodes, targets, schema, **DEPTHS)]
    else:
        first_texts = [prompts.release_order_prompt(row["metadata"], nodes, n, schema, **DEPTHS) for n in targets]
    cache = PrefixCache()
    per_round = []
    conversations = [[{"role": "user", "content": text}] for text in first_texts]
    for round_no in range(1, rounds + 1):
        if round_no > 1:
            conversations = [
                prompts.refine_turn(c, json.dumps(node["gpt"], ensure_ascii=False))
                for c, node in zip(conversations, targets)
            ]
        ids = [tokens.chat(c) for c in conversations]
        cached = sum(cache.add(t) for t in ids)
        total = sum(len(t) for t in ids)
        per_round.append({"round": round_no, "prompt_tokens": total, "cached_tokens": cached})
    first = per_round[0]
    return {
        "layout": layout,
        "nodes": len(targets),
        "round1_prompt_tokens": first["prompt_tokens"],
        "round1_mean_prompt_tokens": first["prompt_tokens"] / len(targets),
        "round1_cached_fraction": first["cached_tokens"] / first["prompt_tokens"],
        "all_rounds_prompt_tokens": sum(r["prompt_tokens"] for r in per_round),
        "all_rounds_cached_fraction": sum(r["cached_tokens"] for r in per_round)
        / sum(r["prompt_tokens"] for r in per_round),
        "rounds": per_round,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", nargs="?", default=str(DEFAULT_SAMPLE))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    sample = Path(args.sample)
    if not sample.is_file():
        print(f"official sample not found at {sample}: nothing to measure (skipped)")
        return 0
    columns = json.loads(sample.read_text())
    row = {name: values[0] for name, values in columns.items()}
    tokens = HarmonyTokens()
    ours = measure(row, "prefix_first", tokens)
    baseline = measure(row, "release_order", tokens)
    print(f"video {row['video_uid']}: {ours['nodes']} annotated nodes; tokens: gpt-oss o200k/harmony; "
          f"global tree depth {DEPTHS['global_depth']}, subtree depth {DEPTHS['subtree_depth']}")  # fmt: skip
    for result in (ours, baseline):
        print(
            f"  {result['layout']:>13}: round-1 prompt tokens {result['round1_prompt_tokens']:,} "
            f"(mean {result['round1_mean_prompt_tokens']:,.0f}/node), cached {result['round1_cached_fraction']:.1%}; "
            f"3 rounds {result['all_rounds_prompt_tokens']:,} tokens, cached {result['all_rounds_cached_fraction']:.1%}"
        )
    uncached = (1 - ours["round1_cached_fraction"]) / (1 - baseline["round1_cached_fraction"])
    print(
        f"  round-1 shared-prefix fraction {ours['round1_cached_fraction']:.1%} (target >= 80%) vs "
        f"release order {baseline['round1_cached_fraction']:.1%}: prefill tokens to compute x{uncached:.2f} of baseline"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"prefix_first": ours, "release_order": baseline}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
