"""LLM backends: construction errors, the harmony (gpt-oss) grammar and final-channel parsing,
and the transformers backend's constrained output. The vLLM backends: tests/test_vllm_cpu.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from action100m_hf.build.stages.aggregate import prompts
from action100m_hf.build.stages.aggregate.self_refine import parse_annotation
from action100m_hf.build.settings import load_profile
from action100m_hf.build.stages.aggregate.backends import Generation, build_llm_backend
from action100m_hf.build.stages.aggregate.backends.base import harmony_final_text, harmony_structural_tag
from action100m_hf.build.stages.aggregate.backends.transformers_backend import token_batches
from action100m_hf.build.stages.aggregate.stage import AggregateStage
from action100m_hf.errors import ModelNotAvailableError, ProfileError

FINAL = {
    "summary": {"brief": "A cook fries onions.", "detailed": "The cook stirs onions in a pan."},
    "action": {"brief": "fry onions", "detailed": "Stir the onions in the pan.", "actor": "a cook"},
}


def tiny_generation(model: str) -> Generation:
    return Generation(model=model, reasoning_effort=None, max_string_length=24, max_new_tokens=200, temperature=0.0)


def test_paper_profile_is_gpt_oss_120b_with_high_reasoning():
    paper = load_profile("paper")["aggregate"]
    assert (paper.model, paper.reasoning_effort, paper.max_string_length) == ("openai/gpt-oss-120b", "high", None)
    assert (paper.backend, paper.rounds, paper.temperature) == ("vllm", 3, 1.0)
    assert load_profile("tiny")["aggregate"].max_string_length == 24


def test_unknown_backend_and_bad_backend_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown LLM backend 'llamacpp'; expected one of vllm, openai, transformers"):
        build_llm_backend("llamacpp", tiny_generation("x"), seed=0)
    with pytest.raises(ProfileError, match=r"aggregate.backends.transformers: missing max_batch_tokens; unknown batch "):
        build_llm_backend("transformers", tiny_generation("x"), seed=0, max_batch_size=2, batch=3)


def test_missing_model_folder_is_a_model_not_available_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotAvailableError, match=f"transformers cannot load model '{missing}'"):
        build_llm_backend("transformers", tiny_generation(str(missing)), seed=0, max_batch_size=2, max_batch_tokens=64)


def test_vllm_backend_without_vllm_names_the_package():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is importable here; tests/test_vllm_cpu.py covers the backend")
    with pytest.raises(ModelNotAvailableError, match="the vllm backend needs the package vllm"):
        build_llm_backend("vllm", tiny_generation("any"), seed=0, structured_outputs_backend="guidance")


@pytest.mark.parametrize(
    "lengths, size, tokens, batches",
    [
        ([5, 9, 3, 9], 8, 100, [[1, 3, 0, 2]]),  # longest first, ties by index
        ([5, 9, 3, 9], 2, 100, [[1, 3], [0, 2]]),  # at most `size` prompts
        ([5, 9, 3, 9], 8, 20, [[1, 3], [0, 2]]),  # 9 x 3 > 20: the third would overflow
        ([50, 4], 8, 20, [[0], [1]]),  # longer than the bound: alone
    ],
)
def test_token_batches_bound_prompts_and_padded_tokens(lengths, size, tokens, batches):
    assert token_batches(lengths, size, tokens) == batches


def test_harmony_grammar_accepts_analysis_then_final_json_only():
    xgrammar = pytest.importorskip("xgrammar")
    from action100m_hf.build.tiny import offline_tokenizer

    tokenizer = offline_tokenizer()
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer)))
    grammar = compiler.compile_structural_tag(json.dumps(harmony_structural_tag(prompts.response_schema(None))))
    completion = (
        "<|channel|>analysis<|message|>The captions agree: onions, a pan.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>" + json.dumps(FINAL, separators=(",", ":"))
    )
    assert xgrammar.GrammarMatcher(grammar).accept_string(completion)
    no_json = "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>Sure"
    assert not xgrammar.GrammarMatcher(grammar).accept_string(no_json)
    assert not xgrammar.GrammarMatcher(grammar).accept_string(json.dumps(FINAL))


def test_harmony_final_text_takes_the_final_channel():
    completion = (
        "<|channel|>analysis<|message|>think {not this}<|end|><|start|>assistant"
        '<|channel|>final<|message|>{"a": 1}<|return|>'
    )
    assert harmony_final_text(completion) == '{"a": 1}'
    assert harmony_final_text("<|channel|>analysis<|message|>still thinking") == ""


def test_transformers_backend_output_follows_the_schema():
    tiny = load_profile("tiny", ["aggregate.backends.transformers.max_batch_size=2"])
    backend = AggregateStage(tiny["aggregate"], tiny.run).models
    assert (backend.batch_size, backend.max_batch_tokens) == (2, 32768)
    schema = prompts.response_schema(backend.max_string_length)
    conversations = [
        [{"role": "user", "content": "Describe the video."}],
        [{"role": "user", "content": "Summarize the segment."}],
        [{"role": "user", "content": "What happens?"}],
    ]
    outputs = backend.generate_json(conversations, schema)
    assert len(outputs) == 3
    for text in outputs:
        value = parse_annotation(text, schema)
        # Byte-level tokens may leave invalid UTF-8 that decodes to several U+FFFD characters.
        assert all(0 < len(v.replace("\ufffd", "")) <= 24 for group in value.values() for v in group.values())
