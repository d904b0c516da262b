"""The tiny stand-in of the aggregate stage's LLM: a random causal LM ("llama", or the gpt-oss
architecture) with the offline tokenizer, saved like a real checkpoint so transformers and vLLM
load it as they load gpt-oss."""

from __future__ import annotations

from pathlib import Path

from action100m_hf.build.tiny import cached_build, offline_tokenizer, recipe_key, save_with_generation_config, token_ids

CAUSAL_LM_ARCHS = ("llama", "gpt_oss")


def _causal_lm_config(arch: str, tokenizer):
    from transformers import GptOssConfig, LlamaConfig

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        **token_ids(tokenizer),
    )
    if arch == "llama":
        return LlamaConfig(intermediate_size=128, max_position_embeddings=16384, **common)
    if arch == "gpt_oss":
        return GptOssConfig(
            intermediate_size=64, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
            # gpt-oss's YaRN scaling (factor 32 over 4096) expects its native 131072 positions.
            sliding_window=16, max_position_embeddings=131072, **common,
        )
    raise ValueError(f"unknown tiny causal LM architecture {arch!r}; expected one of {CAUSAL_LM_ARCHS}")


def build_tiny_causal_lm(arch: str, out_dir: str | Path | None = None, *, seed: int) -> Path:
    """A random tiny causal LM ("llama" or "gpt_oss") + tokenizer saved in one folder.

    The model's `vocab_size` equals the tokenizer's size (llguidance requires it).
    """
    if arch not in CAUSAL_LM_ARCHS:
        raise ValueError(f"unknown tiny causal LM architecture {arch!r}; expected one of {CAUSAL_LM_ARCHS}")

    def build(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = offline_tokenizer(folder)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_causal_lm_config(arch, tokenizer))
        save_with_generation_config(model, tokenizer, folder)

    config = _causal_lm_config(arch, offline_tokenizer()).to_dict()
    return cached_build(f"{arch}-seed{seed}", recipe_key(config, seed), out_dir, build)


