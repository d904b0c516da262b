"""LLM backends: construction errors, the harmony (gpt-oss) grammar and final-channel parsing,
and the transformers backend's constrained output. The vLLM backends: tests/test_vllm_cpu.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from action100m_hf.build.stages.aggregate import prompts
from action100m_hf.build.stages.aggregate.self_refine import parse_annotation
from action100m_hf.build.settings import load_profile
from action100m_hf.build.stages.aggregate.backends import Generation, build_llm_backend
from action100m_hf.build.stages.aggregate.backends.base import harmony_final_text, harmony_structural_tag
from action100m_hf.build.stages.aggregate.backends.transformers_backend import prefix_batches
from action100m_hf.build.stages.aggregate.stage import AggregateStage
from action100m_hf.data.tree import annotatable
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
        build_llm_backend("vllm", tiny_generation("any"), seed=0, structured_outputs_backend="guidance", wave_cache_fraction=0.5)


def test_prefix_batches_group_shared_prefixes_and_bound_the_work():
    a = [[1] * 40 + [2, 3], [1] * 40 + [2, 4, 4], [1] * 40 + [5]]  # one video: 40 tokens in common
    b = [[7] * 50 + [8], [7] * 50 + [9, 9]]  # another video
    prompts = [a[0], b[0], a[1], b[1], a[2]]
    # Sorted by tokens: a's prompts, then b's; each group one batch sharing its prefix.
    assert prefix_batches(prompts, 8, 10_000) == [([0, 2, 4], 40), ([1, 3], 50)]
    # At most 2 prompts per batch: the third of `a` runs alone, as a plain prompt; the first two
    # share one more token ([.., 2, 3] and [.., 2, 4, 4]).
    assert prefix_batches(prompts, 2, 10_000) == [([0, 2], 41), ([4], 0), ([1, 3], 50)]
    # Tokens computed: 40 shared + 3 x 3 own (padded) = 49 <= 49; 48 is one too few for three.
    assert prefix_batches(a, 8, 49) == [([0, 1, 2], 40)]
    assert prefix_batches(a, 8, 48) == [([0, 1], 41), ([2], 0)]
    # A prompt that is all prefix keeps one token of its own; a short common prefix is not shared.
    assert prefix_batches([[1] * 40, [1] * 40 + [2]], 8, 10_000) == [([0, 1], 39)]
    assert prefix_batches([[1] * 10 + [2], [1] * 10 + [3]], 8, 10_000) == [([0, 1], 0)]


@pytest.mark.slow
def test_batched_prefix_path_gives_the_batch_1_outputs_and_computes_fewer_tokens():
    row = json.loads((Path(__file__).parent / "golden" / "stage3_tree.json").read_text())
    other = json.loads(json.dumps(row))
    other["metadata"]["title"] = "Another video entirely"
    schema = prompts.response_schema(24)
    conversations = [
        prompts.first_turn(p)
        for r in (row, other)
        for p in prompts.node_prompts(r["metadata"], r["nodes"], annotatable(r["nodes"]), schema, global_depth=3, subtree_depth=3)
    ]
    conversations += [prompts.refine_turn(c, json.dumps(FINAL)) for c in conversations[:3]]  # round-2 prompts too

    def backend(size: int):
        tiny = load_profile("tiny", [f"aggregate.backends.transformers.max_batch_size={size}"])
        return AggregateStage(tiny["aggregate"], tiny.run).models

    one, batched = backend(1), backend(16)
    alone = one.generate_json(conversations, schema)
    together = batched.generate_json(conversations, schema)
    assert together == alone
    assert all(parse_annotation(text, schema) for text in together)
    lengths = sum(len(p) for p in one.prompt_ids(conversations))
    assert one.prefill_tokens == lengths
    # Each video's shared prefix is computed once (more than half of every prompt's tokens).
    assert batched.prefill_tokens < 0.6 * lengths


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
