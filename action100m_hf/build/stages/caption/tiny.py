"""The tiny stand-ins of the caption stage's models: random PerceptionLM and Mllama
(Llama-3.2-Vision) of the real architectures with their processors, built offline and saved like
real checkpoints, so the captioners load them exactly as they load the paper's models."""

from __future__ import annotations

from pathlib import Path

from action100m_hf.build.tiny import (
    CHAT_TEMPLATE,
    cached_build,
    offline_tokenizer,
    recipe_key,
    save_with_generation_config,
    token_ids,
)


def perception_lm_processor(tokenizer, tile_size: int = 28, pooling_ratio: int = 1, max_num_tiles: int = 1):
    """A PerceptionLM processor around `tokenizer`: video frames and image tiles of `tile_size` px.

    The defaults are the tiny profile's; PerceptionLM-3B uses 448 px, pooling 2 and 36 tiles.
    """
    from transformers import PerceptionLMImageProcessor, PerceptionLMProcessor, PerceptionLMVideoProcessor

    return PerceptionLMProcessor(
        image_processor=PerceptionLMImageProcessor(
            tile_size=tile_size, max_num_tiles=max_num_tiles, vision_input_type="thumb+tile"
        ),
        video_processor=PerceptionLMVideoProcessor(size={"height": tile_size, "width": tile_size}),
        tokenizer=tokenizer,
        patch_size=14,
        pooling_ratio=pooling_ratio,
        chat_template=CHAT_TEMPLATE,
    )


def _perception_lm_config(tokenizer):
    from transformers import LlamaConfig, PerceptionLMConfig, TimmWrapperConfig

    vision = TimmWrapperConfig(
        architecture="vit_pe_core_large_patch14_336",
        do_pooling=False,
        model_args={"embed_dim": 64, "depth": 2, "num_heads": 2, "img_size": 28,
                    "global_pool": "", "ref_feat_shape": (2, 2)},
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, **token_ids(tokenizer),
    )
    return PerceptionLMConfig(
        vision_config=vision, text_config=text, projector_pooling_ratio=1,
        image_token_id=tokenizer.image_token_id, video_token_id=tokenizer.video_token_id,
    )


def build_tiny_perception_lm(out_dir: str | Path | None = None, *, seed: int) -> Path:
    """A random tiny PerceptionLM (timm PE-core vision tower + small Llama) and its processor."""
    tokenizer = offline_tokenizer()

    def build(folder: Path) -> None:
        import torch
        from transformers import PerceptionLMForConditionalGeneration

        torch.manual_seed(seed)
        model = PerceptionLMForConditionalGeneration(_perception_lm_config(tokenizer))
        save_with_generation_config(model, tokenizer, folder)
        perception_lm_processor(tokenizer).save_pretrained(str(folder))

    recipe = recipe_key(_perception_lm_config(tokenizer).to_dict(), seed)
    return cached_build(f"perception_lm-seed{seed}", recipe, out_dir, build)


def _mllama_config(tokenizer):
    from transformers import MllamaConfig, MllamaTextConfig, MllamaVisionConfig

    vision = MllamaVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
        intermediate_size=64, image_size=28, patch_size=14, max_num_tiles=4,
        intermediate_layers_indices=[0, 1], vision_output_dim=96,
    )
    text = MllamaTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1],
        max_position_embeddings=4096, **token_ids(tokenizer),
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id)


def build_tiny_mllama(out_dir: str | Path | None = None, *, seed: int) -> Path:
    """A random tiny Mllama (Llama-3.2-Vision architecture) and its processor."""
    tokenizer = offline_tokenizer()

    def build(folder: Path) -> None:
        import torch
        from transformers import MllamaForConditionalGeneration, MllamaImageProcessor, MllamaProcessor

        torch.manual_seed(seed)
        model = MllamaForConditionalGeneration(_mllama_config(tokenizer))
        # Mllama initialises its cross-attention gates at zero, so a random model would ignore
        # the image entirely; opening them makes the caption depend on the image, as it must.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                    param.fill_(1.0)
        save_with_generation_config(model, tokenizer, folder)
        processor = MllamaProcessor(
            image_processor=MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=4),
            tokenizer=tokenizer,
            chat_template=CHAT_TEMPLATE,
        )
        processor.save_pretrained(str(folder))

    recipe = recipe_key(_mllama_config(tokenizer).to_dict(), seed)
    return cached_build(f"mllama-seed{seed}", recipe, out_dir, build)
