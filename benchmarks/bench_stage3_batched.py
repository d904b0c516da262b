"""The aggregate stage's transformers path on the CPU: batched with each video's shared prefix
computed once, against one prompt at a time (the batch-1 path, its baseline), in the same run.

Same tiny model (the tiny profile's random Llama and offline tokenizer), same grammar, greedy: the
texts must be equal (checked), so the ratio is pure throughput. Prompts: the first Self-Refine round
of every annotatable node of the embedded sample's 4 videos, built from their captioned trees.

    python benchmarks/bench_stage3_batched.py [--batch 32] [--no-write]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results_md import machine, write_section  # noqa: E402


def conversations(work: Path) -> list:
    """Round-1 conversations of the sample's annotatable nodes (segment and caption stages run)."""
    import pyarrow.parquet as pq

    from action100m_hf.build.settings import load_profile
    from action100m_hf.build.stages.aggregate import prompts
    from action100m_hf.data.tree import annotatable

    done = subprocess.run([sys.executable, "-m", "action100m_hf", "build", "--stages", "segment,caption", "--quiet",
                           "--no-merge"], cwd=work, capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    s = load_profile("tiny")["aggregate"]
    schema = prompts.response_schema(s.max_string_length)
    rows = pq.read_table(sorted((work / "action100m" / "_work" / "caption").glob("*/*.parquet"))).to_pylist()
    out = []
    for row in rows:
        for p in prompts.node_prompts(row["metadata"], row["nodes"], annotatable(row["nodes"]), schema,
                                      global_depth=s.global_depth, subtree_depth=s.subtree_depth):  # fmt: skip
            out.append(prompts.first_turn(p))
    return out, schema


def backend(batch: int):
    from action100m_hf.build.settings import load_profile
    from action100m_hf.build.stages.aggregate.stage import AggregateStage

    profile = load_profile("tiny", [f"aggregate.backends.transformers.max_batch_size={batch}"])
    return AggregateStage(profile["aggregate"], profile.run).models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="max_batch_size of the batched path")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stage3-"))
    try:
        convs, schema = conversations(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {}
    for name, size in (("batch 1", 1), (f"batched ({args.batch}, shared prefix)", args.batch)):
        lm = backend(size)
        lm.generate_json(convs[:2], schema)  # warm-up
        start = time.perf_counter()
        texts = lm.generate_json(convs, schema)
        seconds = time.perf_counter() - start
        results[name] = {"seconds": seconds, "texts": texts, "prefill": lm.prefill_tokens}
    (one, batched) = results.values()
    assert batched["texts"] == one["texts"], "the batched path must give the batch-1 texts"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    lines = [
        "## Stage 3 on transformers: batched with a shared prefix vs batch 1 (issue 17)",
        "",
        f"`python benchmarks/bench_stage3_batched.py --batch {args.batch}` ({machine()}): the tiny profile's random "
        f"Llama, greedy, JSON-schema grammar; {len(convs)} round-1 prompts of the embedded sample's 4 videos. "
        "Texts equal to the batch-1 path's (checked).",
        "",
        "| path | seconds | nodes/s | prefill tokens computed |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['seconds']:.1f} | {len(convs) / r['seconds']:.2f} | {r['prefill']:,} |")
    lines += [
        "",
        f"Batched / batch 1: **{one['seconds'] / batched['seconds']:.2f}x** the throughput, "
        f"{batched['prefill'] / one['prefill']:.2f}x the prefill tokens; peak RSS of the process {rss:.2f} GiB. "
        "(transformers' continuous batching, `generate_batch`, takes no per-request logits processor, so it "
        "cannot apply the grammar; this is batched `generate` with each video's prefix KV cache reused.)",
        "",
        "No GPU was lent to this task: the stage-3 GPU figure is still the batch-1 one (2.78 H200-hours per "
        "video-hour at the dataset's segment density, gpt-oss-20b geometry; section above).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("stage3-batched", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
