"""GPU throughput of the stage-2 PerceptionLM captioner: captions/s at batch 8 against batch 1.

The model is PerceptionLM-3B's architecture (PE-core-L/14 vision tower at 448 px, 2x2 pooling,
Llama-3.2-3B text model) with random bf16 weights: no download. Each request is 32 frames of
320x320 and the paper's caption prompt; every caption is exactly `--new-tokens` tokens (end of
text disabled), so the figure is the cost of the work, not of what a random model writes.
Runs through `captioners.Captioner.caption`, the code path of the pipeline.

    python benchmarks/gpu_captioners.py            # GPU, <= 90 s
    python benchmarks/gpu_captioners.py --smoke    # CPU, a tiny configuration of the same code
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action100m_hf.captioners import PLM_CAPTION_PROMPT, CaptionRequest, Captioner  # noqa: E402
from action100m_hf.tiny_models import offline_tokenizer, perception_lm_processor  # noqa: E402

#: PerceptionLM-3B (facebook/Perception-LM-3B, converted by transformers'
#: convert_perception_lm_weights_to_hf.py): vision and text settings.
PLM_3B = {
    "vision": {"embed_dim": 1024, "depth": 23, "img_size": 448, "use_post_transformer_norm": False,
               "init_values": 0.1, "ref_feat_shape": (32, 32)},  # fmt: skip
    "text": {"vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
             "num_attention_heads": 24, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
             "max_position_embeddings": 11520, "tie_word_embeddings": True,
             "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192}},  # fmt: skip
    "tile_size": 448,
    "pooling_ratio": 2,
}
#: The same code on a CPU in seconds.
SMOKE = {
    "vision": {"embed_dim": 64, "depth": 2, "num_heads": 2, "img_size": 28, "ref_feat_shape": (2, 2)},
    "text": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},  # fmt: skip
    "tile_size": 28,
    "pooling_ratio": 1,
}


def random_plm(settings: dict, tokenizer, device: str, dtype: torch.dtype):
    """A randomly initialised PerceptionLM of the given settings, built directly on `device`."""
    from transformers import LlamaConfig, PerceptionLMConfig, PerceptionLMForConditionalGeneration, TimmWrapperConfig

    vision = TimmWrapperConfig(
        architecture="vit_pe_core_large_patch14_336",
        do_pooling=False,
        model_args={"global_pool": "", **settings["vision"]},
    )
    config = PerceptionLMConfig(
        vision_config=vision,
        text_config=LlamaConfig(**settings["text"]),
        projector_pooling_ratio=settings["pooling_ratio"],
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = PerceptionLMForConditionalGeneration._from_config(config, dtype=dtype)
    # No end of text: every caption is exactly max_new_tokens long.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def requests(count: int, num_frames: int, frame_size: int) -> list[CaptionRequest]:
    rng = np.random.default_rng(0)
    return [
        CaptionRequest("bench", f"node{i}", rng.integers(0, 256, (num_frames, frame_size, frame_size, 3), np.uint8),
                       PLM_CAPTION_PROMPT)  # fmt: skip
        for i in range(count)
    ]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configuration on the CPU")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--frame-size", type=int, default=320)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    args = parser.parse_args()

    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device; run with --smoke on a CPU", file=sys.stderr)
        return 2
    settings = SMOKE if smoke else PLM_3B
    new_tokens = 4 if smoke else args.new_tokens
    num_frames = 4 if smoke else args.frames
    dtype = torch.float32 if smoke else torch.bfloat16

    started = time.perf_counter()
    tokenizer = offline_tokenizer()
    processor = perception_lm_processor(tokenizer, settings["tile_size"], settings["pooling_ratio"])
    model = random_plm(settings, tokenizer, device, dtype)
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())

    def captioner(batch_size: int) -> Captioner:
        return Captioner("plm", model, processor, model_id="random PerceptionLM-3B architecture",
                         use_chat_template=True, batch_size=batch_size, max_new_tokens=new_tokens,
                         num_frames=num_frames, frame_size=args.frame_size)  # fmt: skip

    captioner(1).caption(requests(1, num_frames, args.frame_size))  # warm-up (kernels, allocator)
    results = {}
    for batch_size in (1, 8):
        batch = requests(batch_size * args.batches, num_frames, args.frame_size)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        start = time.perf_counter()
        texts = captioner(batch_size).caption(batch)
        sync(device)
        seconds = time.perf_counter() - start
        assert len(texts) == len(batch)
        results[batch_size] = {
            "captions": len(batch),
            "seconds": round(seconds, 3),
            "captions_per_s": round(len(batch) / seconds, 3),
            "new_tokens_per_s": round(len(batch) * new_tokens / seconds, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        }
    ratio = results[8]["captions_per_s"] / results[1]["captions_per_s"]
    summary = {
        "benchmark": "gpu_captioners",
        "smoke": smoke,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "model": "PerceptionLM-3B architecture, random weights" if not smoke else "tiny PerceptionLM",
        "parameters": params,
        "dtype": str(dtype).removeprefix("torch."),
        "frames": num_frames,
        "frame_size": args.frame_size,
        "video_tokens_per_request": num_frames * (settings["tile_size"] // 14 // settings["pooling_ratio"]) ** 2,
        "new_tokens": new_tokens,
        "build_s": round(build_s, 1),
        "batch_1": results[1],
        "batch_8": results[8],
        "batch8_vs_batch1_captions_per_s": round(ratio, 2),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(
        f"{summary['model']} ({params / 1e9:.2f} B params, {summary['dtype']}) on {summary['device']}: "
        f"{num_frames} frames x {args.frame_size} px, {new_tokens} new tokens\n"
        f"  batch 1: {results[1]['captions_per_s']} captions/s ({results[1]['new_tokens_per_s']} tokens/s)\n"
        f"  batch 8: {results[8]['captions_per_s']} captions/s ({results[8]['new_tokens_per_s']} tokens/s), "
        f"peak {results[8]['peak_gib']} GiB\n"
        f"  batch 8 / batch 1 = {ratio:.2f}x captions/s; total {summary['total_s']} s"
    )
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_captioners.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
