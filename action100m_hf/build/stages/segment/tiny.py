"""The tiny stand-in of the segment stage's encoder: a seeded random V-JEPA 2 of a few thousand
parameters (TINY-MODELS.md), the same class and preprocessing as ViT-g-384, seconds on a CPU."""

from __future__ import annotations

from action100m_hf.data.schema import WINDOW_FRAMES

TINY_VJEPA2_CONFIG = dict(
    patch_size=16,
    crop_size=64,
    frames_per_clip=WINDOW_FRAMES,
    tubelet_size=2,
    hidden_size=48,
    num_attention_heads=2,
    num_hidden_layers=2,
    mlp_ratio=2.0,
    pred_hidden_size=24,
    pred_num_attention_heads=2,
    pred_num_hidden_layers=1,
    num_pooler_layers=1,
)


def tiny_vjepa2(seed: int):
    """(model, processor): `TINY_VJEPA2_CONFIG` with weights seeded by `seed`."""
    import torch
    from transformers import VJEPA2Config, VJEPA2Model, VJEPA2VideoProcessor

    config = VJEPA2Config(**TINY_VJEPA2_CONFIG, attn_implementation="sdpa")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VJEPA2Model(config)
    return model, VJEPA2VideoProcessor(crop_size=config.crop_size)
