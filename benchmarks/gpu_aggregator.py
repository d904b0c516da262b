"""Stage-3 cost per annotated node on a GPU, with and without reusing the video's shared prompt
prefix (the KV cache of the prefix computed once and copied to every node).

This is transformers, not vLLM (no vLLM on the GPU machine): a randomly initialised
GptOssForCausalLM of gpt-oss-20b's geometry in bf16, greedy decoding by hand (one forward per
token, logits of the last position only). Prompt and shared-prefix lengths default to the
official sample's mean (benchmarks/bench_prompts.py: 11,255 tokens per node, 81.6 % shared);
the output length is fixed. Random weights cost the same FLOPs as trained ones.

    python benchmarks/gpu_aggregator.py [--layers 24] [--nodes 4] [--output-tokens 128]
    python benchmarks/gpu_aggregator.py --smoke      # tiny config on the CPU, a few seconds
Writes $OUT/aggregator.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

# gpt-oss-20b (24 layers, 32 experts top-4); gpt-oss-120b has 36 layers and 128 experts.
GPT_OSS_20B = dict(
    vocab_size=201088, hidden_size=2880, intermediate_size=2880, head_dim=64,
    num_attention_heads=64, num_key_value_heads=8, num_local_experts=32, num_experts_per_tok=4,
    sliding_window=128, max_position_embeddings=131072,
)  # fmt: skip
TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=64, head_dim=16, num_attention_heads=4,
    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
    max_position_embeddings=131072,
)  # fmt: skip


def build_model(geometry: dict, layers: int, device: str, dtype: torch.dtype):
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(num_hidden_layers=layers, **geometry)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = GptOssForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def decode(model, cache, last_logits, steps: int):
    """Greedy decoding of `steps` tokens from a filled cache."""
    token = last_logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):
        out = model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    return token


@torch.inference_mode()
def run_mode(model, prompts: torch.Tensor, shared: int, steps: int, reuse: bool, device: str) -> dict:
    """Prefill then decode node by node (gpt-oss runs eager attention: a batched 11 k-token
    prefill would need a 60 GiB score matrix); with `reuse`, the shared prefix is prefilled once
    and its cache copied for every node, as a prefix cache serves it."""
    import copy

    nodes = prompts.shape[0]
    sync(device)
    start = time.perf_counter()
    prefix_cache = None
    if reuse:
        prefix_cache = model(input_ids=prompts[:1, :shared], use_cache=True, logits_to_keep=1).past_key_values
    sync(device)
    shared_s = time.perf_counter() - start
    prefill_s = shared_s
    decode_s = 0.0
    for i in range(nodes):
        sync(device)
        t0 = time.perf_counter()
        if reuse:
            cache = copy.deepcopy(prefix_cache)
            out = model(input_ids=prompts[i : i + 1, shared:], past_key_values=cache, use_cache=True, logits_to_keep=1)
        else:
            out = model(input_ids=prompts[i : i + 1], use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
        sync(device)
        t1 = time.perf_counter()
        decode(model, cache, out.logits, steps)
        sync(device)
        prefill_s += t1 - t0
        decode_s += time.perf_counter() - t1
        del cache, out
    total_s = time.perf_counter() - start
    return {
        "prefix_reuse": reuse,
        "shared_prefill_s": shared_s,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": nodes * steps / decode_s,
        "gpu_s_per_node": total_s / nodes,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--nodes", type=int, default=4, help="nodes of one video decoded together")
    parser.add_argument("--prompt-tokens", type=int, default=11255)
    parser.add_argument("--shared-tokens", type=int, default=9184)
    parser.add_argument("--output-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.smoke:
        geometry, device, dtype = TINY, "cpu", torch.float32
        args.layers, args.nodes, args.prompt_tokens, args.shared_tokens, args.output_tokens = 2, 2, 256, 200, 8
    else:
        geometry, device, dtype = GPT_OSS_20B, "cuda", torch.bfloat16
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(geometry, args.layers, device, dtype)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    shared = torch.randint(0, geometry["vocab_size"], (1, args.shared_tokens), generator=generator)
    own = torch.randint(0, geometry["vocab_size"], (args.nodes, args.prompt_tokens - args.shared_tokens), generator=generator)
    prompts = torch.cat([shared.expand(args.nodes, -1), own], dim=1).to(device)
    for reuse in (False, True):  # warm-up of both paths: kernels, allocator
        run_mode(model, prompts[:, :64], 32, 2, reuse, device)
    results = [run_mode(model, prompts, args.shared_tokens, args.output_tokens, reuse, device) for reuse in (False, True)]
    baseline, reuse = results
    summary = {
        "engine": "transformers GptOssForCausalLM (random weights), not vLLM",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "geometry": "tiny" if args.smoke else f"gpt-oss-20b, {args.layers} layers",
        "parameters": params,
        "build_s": build_s,
        "nodes": args.nodes,
        "prompt_tokens": args.prompt_tokens,
        "shared_tokens": args.shared_tokens,
        "output_tokens": args.output_tokens,
        "no_reuse": baseline,
        "prefix_reuse": reuse,
        "gpu_s_per_node_ratio": reuse["gpu_s_per_node"] / baseline["gpu_s_per_node"],
        "prefill_ratio": reuse["prefill_s"] / baseline["prefill_s"],
    }
    print(f"{summary['engine']} on {summary['device']}: {summary['geometry']} ({params / 1e9:.2f} B params, built in {build_s:.1f} s)")
    print(f"{args.nodes} nodes x {args.prompt_tokens} prompt tokens ({args.shared_tokens} shared), {args.output_tokens} output tokens each")
    for name, r in (("no prefix reuse", baseline), ("prefix reuse", reuse)):
        print(
            f"  {name:>15}: prefill {r['prefill_s']:.2f} s, decode {r['decode_tokens_per_s']:.1f} tokens/s, "
            f"{r['gpu_s_per_node']:.2f} GPU-s/node"
        )
    print(
        f"  prefix reuse / no reuse: GPU-s per node x{summary['gpu_s_per_node_ratio']:.2f}, "
        f"prefill x{summary['prefill_ratio']:.2f}"
    )
    if os.environ.get("OUT"):
        os.makedirs(os.environ["OUT"], exist_ok=True)
        with open(os.path.join(os.environ["OUT"], "aggregator.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
