"""GPU throughput of the stage-2 captioners: captions/s at batch 8 against batch 1.

`--model plm` (default): PerceptionLM-3B's architecture (PE-core-L/14 vision tower at 448 px, 2x2
pooling, Llama-3.2-3B text model); each request is 32 frames of 320x320 and the paper's caption
prompt. `--model llama`: Llama-3.2-11B-Vision's architecture (ViT-H/14 at 560 px, 4 tiles,
40-layer text model with 8 cross-attention layers); each request is one 720p middle frame.
Random bf16 weights: no download. Every caption is exactly `--new-tokens` tokens (end of text
disabled), so the figure is the cost of the work, not of what a random model writes. Runs through
`captioners.Captioner.caption`, the code path of the pipeline.

    python benchmarks/gpu_captioners.py [--model plm|llama] [--new-tokens N]   # GPU, <= 90 s
    python benchmarks/gpu_captioners.py --smoke [--model llama]    # CPU, a tiny configuration
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

from action100m_hf.build.stages.caption.captioners import LLAMA_CAPTION_PROMPT, PLM_CAPTION_PROMPT, CaptionRequest, Captioner  # noqa: E402
from action100m_hf.build.stages.caption.tiny import perception_lm_processor  # noqa: E402
from action100m_hf.build.tiny import offline_tokenizer  # noqa: E402

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


#: Llama-3.2-11B-Vision (meta-llama/Llama-3.2-11B-Vision config.json).
LLAMA_11B = {
    "vision": {"hidden_size": 1280, "num_hidden_layers": 32, "num_global_layers": 8, "attention_heads": 16,
               "intermediate_size": 5120, "image_size": 560, "patch_size": 14, "max_num_tiles": 4,
               "intermediate_layers_indices": [3, 7, 15, 23, 30], "vision_output_dim": 7680},
    "text": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 40,
             "num_attention_heads": 32, "num_key_value_heads": 8, "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
             "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
}  # fmt: skip
LLAMA_SMOKE = {
    "vision": {"hidden_size": 32, "num_hidden_layers": 2, "num_global_layers": 1, "attention_heads": 2,
               "intermediate_size": 64, "image_size": 28, "patch_size": 14, "max_num_tiles": 4,
               "intermediate_layers_indices": [0, 1], "vision_output_dim": 96},
    "text": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "cross_attention_layers": [1]},
}  # fmt: skip


def random_mllama(settings: dict, tokenizer, device: str, dtype: torch.dtype):
    """A randomly initialised Mllama of the given settings and its processor, built on `device`."""
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor,
                              MllamaProcessor, MllamaTextConfig, MllamaVisionConfig)  # fmt: skip

    from action100m_hf.build.tiny import CHAT_TEMPLATE

    config = MllamaConfig(
        vision_config=MllamaVisionConfig(**settings["vision"]),
        text_config=MllamaTextConfig(**settings["text"], pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.image_token_id,
    )
    model = random_model(MllamaForConditionalGeneration, config, tokenizer, device, dtype)
    size = settings["vision"]["image_size"]
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessor(size={"height": size, "width": size}, max_image_tiles=4),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def random_model(model_class, config, tokenizer, device: str, dtype: torch.dtype):
    """A seeded random `model_class(config)` built directly on `device`, in eval mode, that never
    ends a caption early (no end of text: every caption is exactly max_new_tokens long)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


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
    return random_model(PerceptionLMForConditionalGeneration, config, tokenizer, device, dtype)


def requests(count: int, shape: tuple, prompt: str) -> list[CaptionRequest]:
    rng = np.random.default_rng(0)
    return [CaptionRequest("bench", f"node{i}", rng.integers(0, 256, shape, np.uint8), prompt) for i in range(count)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configuration on the CPU")
    parser.add_argument("--model", choices=("plm", "llama"), default="plm")
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
    new_tokens = 4 if smoke else args.new_tokens
    dtype = torch.float32 if smoke else torch.bfloat16

    started = time.perf_counter()
    tokenizer = offline_tokenizer()
    if args.model == "plm":
        settings = SMOKE if smoke else PLM_3B
        num_frames = 4 if smoke else args.frames
        processor = perception_lm_processor(tokenizer, settings["tile_size"], settings["pooling_ratio"])
        model = random_plm(settings, tokenizer, device, dtype)
        shape, prompt, name = (num_frames, args.frame_size, args.frame_size, 3), PLM_CAPTION_PROMPT, "PerceptionLM-3B"
        media_tokens = num_frames * (settings["tile_size"] // 14 // settings["pooling_ratio"]) ** 2
    else:
        settings = LLAMA_SMOKE if smoke else LLAMA_11B
        num_frames = 1
        model, processor = random_mllama(settings, tokenizer, device, dtype)
        shape, prompt, name = (1, 720, 1280, 3), LLAMA_CAPTION_PROMPT, "Llama-3.2-11B-Vision"
        media_tokens = None  # cross-attention: image features do not enter the token sequence
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())

    def captioner(batch_size: int) -> Captioner:
        return Captioner(args.model, model, processor, model_id=f"random {name} architecture",
                         use_chat_template=args.model == "plm", batch_size=batch_size, max_new_tokens=new_tokens,
                         num_frames=num_frames, frame_size=args.frame_size)  # fmt: skip

    captioner(1).caption(requests(1, shape, prompt))  # warm-up (kernels, allocator)
    results = {}
    for batch_size in (1, 8):
        batch = requests(batch_size * args.batches, shape, prompt)
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
        "model": f"{name} architecture, random weights" if not smoke else f"tiny {name}",
        "parameters": params,
        "dtype": str(dtype).removeprefix("torch."),
        "frames": num_frames,
        "frame_shape": list(shape[1:]),
        "media_tokens_per_request": media_tokens,
        "new_tokens": new_tokens,
        "build_s": round(build_s, 1),
        "batch_1": results[1],
        "batch_8": results[8],
        "batch8_vs_batch1_captions_per_s": round(ratio, 2),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(
        f"{summary['model']} ({params / 1e9:.2f} B params, {summary['dtype']}) on {summary['device']}: "
        f"{num_frames} frame(s) of {shape[1]}x{shape[2]}, {new_tokens} new tokens\n"
        f"  batch 1: {results[1]['captions_per_s']} captions/s ({results[1]['new_tokens_per_s']} tokens/s)\n"
        f"  batch 8: {results[8]['captions_per_s']} captions/s ({results[8]['new_tokens_per_s']} tokens/s), "
        f"peak {results[8]['peak_gib']} GiB\n"
        f"  batch 8 / batch 1 = {ratio:.2f}x captions/s; total {summary['total_s']} s"
    )
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / f"gpu_captioners_{args.model}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
