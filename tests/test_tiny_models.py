"""Tiny random models: offline tokenizer, causal LMs, PerceptionLM and Mllama builds and reloads."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    MllamaForConditionalGeneration,
    MllamaProcessor,
    PerceptionLMForConditionalGeneration,
    PerceptionLMProcessor,
)

from action100m_hf.build import tiny as tiny_models
from action100m_hf.build.stages.aggregate.tiny import build_tiny_causal_lm
from action100m_hf.build.stages.caption.tiny import build_tiny_mllama, build_tiny_perception_lm
from action100m_hf.build.tiny import IMAGE_TOKEN, SPECIAL_TOKENS, VIDEO_TOKEN, offline_tokenizer


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ACTION100M_HF_CACHE", str(tmp_path_factory.getbasetemp() / "a100m-cache"))


def test_tokenizer_is_deterministic_and_carries_the_special_tokens():
    first, second = offline_tokenizer(), offline_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    # The corpus runs out of merges before the cap: every word of it is then a token.
    assert len(first) < tiny_models.DEFAULT_VOCAB_SIZE
    # Special tokens come first, in their declared order.
    assert [first.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (first.image_token, first.video_token) == (IMAGE_TOKEN, VIDEO_TOKEN)
    assert first.image_token_id == first.convert_tokens_to_ids(IMAGE_TOKEN)
    assert first.eos_token == "<|eot_id|>"
    # Corpus words are whole tokens; anything else falls back to bytes and still round-trips.
    assert first.tokenize("A man cuts the onion in the kitchen.") == [
        "A", "Ġman", "Ġcuts", "Ġthe", "Ġonion", "Ġin", "Ġthe", "Ġkitchen", ".",
    ]  # fmt: skip
    # The stage-3 prompt's own text is in the corpus: its words are whole tokens too, so a tiny
    # model's prompts are about as many tokens as a real tokenizer makes of them.
    assert first.tokenize("Guidelines and requirements:") == ["Guidelines", "Ġand", "Ġrequirements", ":"]
    assert first.decode(first("Zebra ünïcode 🙂")["input_ids"]) == "Zebra ünïcode 🙂"
    assert offline_tokenizer(vocab_size=400).__len__() == 400


def test_chat_template_renders_turns_and_media_items():
    tokenizer = offline_tokenizer()
    messages = [
        {"role": "system", "content": "Be brief. "},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe this video."}]},
        {"role": "assistant", "content": "A man cooks."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<|video|>Describe this video.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA man cooks.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<|image|>And this?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_tokenizer_round_trips_through_save_pretrained(tmp_path):
    tokenizer = offline_tokenizer(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|video|>The cook stirs the dough."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.video_token, loaded.video_token_id) == (VIDEO_TOKEN, tokenizer.video_token_id)
    assert loaded.chat_template == tokenizer.chat_template


@pytest.mark.parametrize("arch", ["llama", "gpt_oss"])
def test_causal_lm_loads_and_generates_deterministically(arch, tmp_path):
    folder = build_tiny_causal_lm(arch, tmp_path / "a", seed=0)
    again = build_tiny_causal_lm(arch, tmp_path / "b", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tokenizer)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    out_again = AutoModelForCausalLM.from_pretrained(again).generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(out, out_again)


def test_seed_changes_the_weights_and_the_cache_is_reused(tmp_path):
    seed0 = build_tiny_causal_lm("llama", seed=0)
    seed1 = build_tiny_causal_lm("llama", seed=1)
    # Folders are named by seed and by a hash of the recipe (config, corpus), so a changed
    # recipe never serves an old model.
    assert seed0.name.startswith("llama-seed0-") and seed1.name.startswith("llama-seed1-")
    assert seed0.name.split("-")[-1] != seed1.name.split("-")[-1]
    weights = (seed0 / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_causal_lm("llama", seed=0) == seed0
    assert (seed0 / "model.safetensors").stat().st_mtime_ns == weights
    w0 = AutoModelForCausalLM.from_pretrained(seed0).lm_head.weight
    w1 = AutoModelForCausalLM.from_pretrained(seed1).lm_head.weight
    assert not torch.equal(w0, w1)


def test_unknown_architecture_is_named(tmp_path):
    with pytest.raises(ValueError, match="'mistral'"):
        build_tiny_causal_lm("mistral", tmp_path, seed=0)


def test_perception_lm_and_mllama_reload_with_their_processors(tmp_path):
    plm_dir = build_tiny_perception_lm(tmp_path / "plm", seed=0)
    processor = AutoProcessor.from_pretrained(plm_dir)
    model = PerceptionLMForConditionalGeneration.from_pretrained(plm_dir)
    assert isinstance(processor, PerceptionLMProcessor)
    assert (model.config.image_token_id, model.config.video_token_id) == (
        processor.tokenizer.image_token_id,
        processor.tokenizer.video_token_id,
    )
    assert model.config.text_config.vocab_size == len(processor.tokenizer)

    mllama_dir = build_tiny_mllama(tmp_path / "mllama", seed=0)
    processor = AutoProcessor.from_pretrained(mllama_dir)
    model = MllamaForConditionalGeneration.from_pretrained(mllama_dir)
    assert isinstance(processor, MllamaProcessor)
    assert model.config.image_token_index == processor.tokenizer.image_token_id
    # The cross-attention gates are open, so the image reaches the text.
    gates = [p.item() for n, p in model.named_parameters() if n.endswith("cross_attn_attn_gate")]
    assert gates == [1.0]
