"""LLM backends: construction errors, the harmony (gpt-oss) grammar and final-channel parsing,
and the transformers backend's constrained output. The vLLM backends: tests/test_vllm_cpu.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from action100m_hf.build.stages.aggregate import prompts
from action100m_hf.build.stages.aggregate.self_refine import parse_annotation
from action100m_hf.errors import ModelNotAvailableError
from action100m_hf.build.stages.aggregate.backends import (
    PROFILES,
    build_llm_backend,
    harmony_final_text,
    harmony_structural_tag,
)

FINAL = {
    "summary": {"brief": "A cook fries onions.", "detailed": "The cook stirs onions in a pan."},
    "action": {"brief": "fry onions", "detailed": "Stir the onions in the pan.", "actor": "a cook"},
}


def test_paper_profile_is_gpt_oss_120b_with_high_reasoning():
    paper = PROFILES["paper"]
    assert (paper.model, paper.reasoning_effort, paper.max_string_length) == ("openai/gpt-oss-120b", "high", None)
    assert PROFILES["tiny"].max_string_length == 24


def test_unknown_backend_and_profile_are_named():
    with pytest.raises(ValueError, match=r"unknown LLM backend 'llamacpp'; expected one of \['vllm', 'openai', 'transformers'\]"):
        build_llm_backend("llamacpp")
    with pytest.raises(ValueError, match=r"unknown LLM profile 'huge'; expected one of \['paper', 'tiny'\]"):
        build_llm_backend("transformers", profile="huge")


def test_missing_model_folder_is_a_model_not_available_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotAvailableError, match=f"transformers cannot load model '{missing}'"):
        build_llm_backend("transformers", model=str(missing), profile="tiny")


def test_vllm_backend_without_vllm_names_the_package():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is importable here; tests/test_vllm_cpu.py covers the backend")
    with pytest.raises(ModelNotAvailableError, match="the vllm backend needs the package vllm"):
        build_llm_backend("vllm", model="any", profile="tiny")


def test_harmony_grammar_accepts_analysis_then_final_json_only():
    xgrammar = pytest.importorskip("xgrammar")
    from action100m_hf.build.tiny import offline_tokenizer

    tokenizer = offline_tokenizer()
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer)))
    grammar = compiler.compile_structural_tag(json.dumps(harmony_structural_tag(prompts.response_schema())))
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
    backend = build_llm_backend("transformers", profile="tiny", batch_size=2)
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
