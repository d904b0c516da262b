"""GPU-hours per video-hour of stages 1-2 with the paper profile's architectures (random weights).

Measured on one GPU, in bf16: V-JEPA 2 ViT-g-384 on 64-frame windows (stage 1); for stage 2 the
PerceptionLM-3B language model (Llama-3.2-3B) over a 32-frame video prompt and the
Llama-3.2-11B-Vision text backbone (Llama-3.1-8B) over a middle-frame prompt, both generating
exactly the release's average output lengths, plus their vision towers. The figures are
scaled to one hour of video with the release's density of segments and compared with the
paper's ~10 V100-hours per video-hour for stages 1-2 (a V100 is several times slower than the
GPU measured here: read the ratio with that in mind). Stage 3 (gpt-oss-120b) is not measured:
its bf16 weights do not fit one GPU and its figure depends on vLLM, which this machine lacks.

    python benchmarks/gpu_builder.py            # on the GPU machine, <= 90 s; JSON to $OUT/builder.json
    python benchmarks/gpu_builder.py --smoke    # CPU: tiny shapes of the same classes, full configs on "meta"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

# --- the workload of one hour of video ------------------------------------------------------

#: Release: 147,092,653 segments over 14.6 years of video (SPEC.md section 6).
VIDEO_HOURS = 14.6 * 365.25 * 24
SEGMENTS_PER_HOUR = 147_092_653 / VIDEO_HOURS
#: A full binary tree of n nodes has (n + 1) / 2 leaves.
LEAVES_PER_HOUR = (SEGMENTS_PER_HOUR + 1) / 2
#: Every 4th frame of a 30 fps video; windows of 64 sampled frames every 8 (SPEC.md section 2).
SAMPLED_PER_HOUR = 3600 * 30 / 4
WINDOWS_PER_HOUR = math.ceil((SAMPLED_PER_HOUR - 64) / 8) + 1
#: Average output lengths in the released sample (words x 1.33 tokens per word): plm_caption
#: 78.5 words, plm_action 7.4, llama3_caption 182.2.
PLM_CAPTION_TOKENS, PLM_ACTION_TOKENS, LLAMA_CAPTION_TOKENS = 105, 10, 243
#: PerceptionLM: 32 frames, 448 px tiles of 14 px patches pooled 2 x 2 -> 256 tokens a frame.
PLM_FRAMES, PLM_TOKENS_PER_FRAME, PROMPT_TOKENS = 32, 256, 32
#: The paper's cost: 1.3 M V100-hours for stages 1-2 over the release's video hours.
PAPER_STAGES_1_2_V100_HOURS_PER_VIDEO_HOUR = 1.3e6 / VIDEO_HOURS


def vjepa2_config(smoke: bool):
    from transformers import VJEPA2Config

    if smoke:
        return VJEPA2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, crop_size=64,
                            frames_per_clip=64, pred_num_hidden_layers=1, attn_implementation="sdpa")  # fmt: skip
    # facebook/vjepa2-vitg-fpc64-384: ViT-g (1408 wide, 40 layers, 22 heads, MLP 6144).
    return VJEPA2Config(hidden_size=1408, num_hidden_layers=40, num_attention_heads=22, mlp_ratio=48 / 11,
                        patch_size=16, crop_size=384, frames_per_clip=64, tubelet_size=2,
                        pred_num_hidden_layers=1, attn_implementation="sdpa")  # fmt: skip


def llama_config(kind: str, smoke: bool):
    from transformers import LlamaConfig

    if smoke:
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    if kind == "plm":  # Llama-3.2-3B
        return LlamaConfig(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                           num_attention_heads=24, num_key_value_heads=8, tie_word_embeddings=True)  # fmt: skip
    # Llama-3.2-11B-Vision's text model is Llama-3.1-8B plus 8 cross-attention layers (left out).
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8)  # fmt: skip


def vision_models(smoke: bool):
    """(PerceptionLM's PE-L vision tower, Mllama's vision model) as (model, input) builders."""
    from transformers import MllamaVisionConfig, MllamaVisionModel, TimmWrapperConfig, TimmWrapperModel

    if smoke:
        pe = TimmWrapperConfig(architecture="vit_pe_core_large_patch14_336", do_pooling=False,
                               model_args={"embed_dim": 64, "depth": 2, "num_heads": 2, "img_size": 28,
                                           "global_pool": "", "ref_feat_shape": (2, 2)})  # fmt: skip
        mllama = MllamaVisionConfig(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
                                    intermediate_size=64, image_size=28, patch_size=14, max_num_tiles=4,
                                    intermediate_layers_indices=[0, 1], vision_output_dim=96)  # fmt: skip
        return (pe, 28, TimmWrapperModel), (mllama, 28, MllamaVisionModel)
    pe = TimmWrapperConfig(architecture="vit_pe_core_large_patch14_336", do_pooling=False,
                           model_args={"img_size": 448, "global_pool": "", "ref_feat_shape": (32, 32)})  # fmt: skip
    mllama = MllamaVisionConfig()  # Llama-3.2-11B-Vision: 1280 wide, 32 + 8 layers, 560 px tiles
    return (pe, 448, TimmWrapperModel), (mllama, mllama.image_size, MllamaVisionModel)


def seconds(fn, device, repeat: int = 2, warmup=None) -> float:
    """Mean wall time of `fn()` after one warm-up call (of `warmup`, when given: a shorter run)."""
    (warmup or fn)()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def build(cls, config, device, dtype):
    with torch.device(device):
        return cls(config).to(dtype).eval()


def measure_stage1(device, dtype, smoke: bool) -> dict:
    from transformers import VJEPA2Model

    config = vjepa2_config(smoke)
    model = build(VJEPA2Model, config, device, dtype)
    batch = 1 if smoke else 2
    video = torch.randn(batch, 64, 3, config.crop_size, config.crop_size, device=device, dtype=dtype)
    with torch.inference_mode():
        per_window = seconds(lambda: model(pixel_values_videos=video, skip_predictor=True), device) / batch
    return {"seconds_per_window": per_window, "gpu_hours_per_video_hour": per_window * WINDOWS_PER_HOUR / 3600}


def generate_seconds(model, device, prompt_tokens: int, new_tokens: int, batch: int) -> float:
    """Seconds per request of greedy generation of exactly `new_tokens` after `prompt_tokens`."""
    ids = torch.randint(10, model.config.vocab_size, (batch, prompt_tokens), device=device)

    def run(n: int):
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=n, min_new_tokens=n)  # fmt: skip

    with torch.inference_mode():
        return seconds(lambda: run(new_tokens), device, 1, warmup=lambda: run(2)) / batch


def forward_seconds(cls, config, device, dtype, inputs: dict) -> float:
    """Seconds of one forward pass of a freshly built `cls(config)` (freed on return)."""
    model = build(cls, config, device, dtype)
    with torch.inference_mode():
        return seconds(lambda: model(**inputs), device)


def lm_seconds(config, device, dtype, jobs: list[tuple[int, int]], batch: int) -> list[float]:
    """Seconds per request of each (prompt tokens, new tokens) job on one language model."""
    from transformers import LlamaForCausalLM

    model = build(LlamaForCausalLM, config, device, dtype)
    return [generate_seconds(model, device, prompt, new, batch) for prompt, new in jobs]


def measure_stage2(device, dtype, smoke: bool, batch: int) -> dict:
    (pe_config, pe_size, pe_cls), (ml_config, ml_size, ml_cls) = vision_models(smoke)
    frames = torch.randn(PLM_FRAMES, 3, pe_size, pe_size, device=device, dtype=dtype)
    plm_vision = forward_seconds(pe_cls, pe_config, device, dtype, {"pixel_values": frames})
    tiles = ml_config.max_num_tiles
    image = {
        "pixel_values": torch.randn(1, 1, tiles, 3, ml_size, ml_size, device=device, dtype=dtype),
        "aspect_ratio_ids": torch.ones(1, 1, dtype=torch.long, device=device),
        "aspect_ratio_mask": torch.ones(1, 1, tiles, dtype=torch.long, device=device),
    }
    llama_vision = forward_seconds(ml_cls, ml_config, device, dtype, image)
    plm_prompt = (4 if smoke else PLM_FRAMES * PLM_TOKENS_PER_FRAME) + PROMPT_TOKENS
    plm_jobs = [(plm_prompt, PLM_CAPTION_TOKENS), (plm_prompt, PLM_ACTION_TOKENS)]
    plm_caption, plm_action = lm_seconds(llama_config("plm", smoke), device, dtype, plm_jobs, batch)
    # An image's cross-attention states do not lengthen the text prompt: the prompt is the text.
    (llama_caption,) = lm_seconds(llama_config("llama", smoke), device, dtype, [(PROMPT_TOKENS, LLAMA_CAPTION_TOKENS)], batch)
    per_node = plm_vision + plm_caption + plm_action
    per_leaf = llama_vision + llama_caption
    hours = (per_node * SEGMENTS_PER_HOUR + per_leaf * LEAVES_PER_HOUR) / 3600
    return {
        "plm_vision_seconds_per_node": plm_vision, "plm_caption_seconds_per_node": plm_caption,
        "plm_action_seconds_per_node": plm_action, "llama_vision_seconds_per_leaf": llama_vision,
        "llama_caption_seconds_per_leaf": llama_caption, "batch": batch, "gpu_hours_per_video_hour": hours,
    }  # fmt: skip


def check_full_configs() -> None:
    """Build every full-size model on the meta device: the configs are valid (no memory used)."""
    from transformers import LlamaForCausalLM, VJEPA2Model

    (pe_config, _, pe_cls), (ml_config, _, ml_cls) = vision_models(False)
    for cls, config in [(VJEPA2Model, vjepa2_config(False)), (LlamaForCausalLM, llama_config("plm", False)),
                        (LlamaForCausalLM, llama_config("llama", False)), (pe_cls, pe_config), (ml_cls, ml_config)]:  # fmt: skip
        with torch.device("meta"):
            model = cls(config)
        params = sum(p.numel() for p in model.parameters())
        print(f"  {cls.__name__:<20} {params / 1e9:6.2f} B parameters (meta)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (checks the code runs)")
    parser.add_argument("--batch", type=int, default=8, help="requests per generate call (stage 2)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    if args.smoke:
        check_full_configs()
    started = time.perf_counter()
    stage1 = measure_stage1(device, dtype, args.smoke)
    stage2 = measure_stage2(device, dtype, args.smoke, args.batch)
    total = stage1["gpu_hours_per_video_hour"] + stage2["gpu_hours_per_video_hour"]
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke: tiny shapes)"
    result = {
        "device": gpu, "smoke": args.smoke, "stage1": stage1, "stage2": stage2,
        "stages_1_2_gpu_hours_per_video_hour": total,
        "paper_stages_1_2_v100_hours_per_video_hour": PAPER_STAGES_1_2_V100_HOURS_PER_VIDEO_HOUR,
        "ratio_to_paper": total / PAPER_STAGES_1_2_V100_HOURS_PER_VIDEO_HOUR,
        "workload_per_video_hour": {"segments": SEGMENTS_PER_HOUR, "leaves": LEAVES_PER_HOUR, "windows": WINDOWS_PER_HOUR},
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    print(f"device {gpu}; per video-hour: {SEGMENTS_PER_HOUR:.0f} segments, {LEAVES_PER_HOUR:.0f} leaves, "
          f"{WINDOWS_PER_HOUR} V-JEPA 2 windows")  # fmt: skip
    print(f"stage 1 (V-JEPA 2 ViT-g):  {stage1['gpu_hours_per_video_hour']:.3f} GPU-h per video-hour")
    print(f"stage 2 (PLM-3B + Llama-3.2-11B-V, batch {args.batch}): {stage2['gpu_hours_per_video_hour']:.3f} GPU-h per video-hour")
    print(f"stages 1-2: {total:.3f} GPU-h here vs the paper's {PAPER_STAGES_1_2_V100_HOURS_PER_VIDEO_HOUR:.2f} V100-h "
          f"= ratio {result['ratio_to_paper']:.3f}; measured in {result['seconds']:.0f} s")  # fmt: skip
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "builder.json"), "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
