"""The `vllm` backend: in-process `vllm.LLM` offline batches (the production default), ordered for
vLLM's prefix cache.

Self-Refine runs in waves (`plan_waves`): nodes whose round-1 prompts, less what they share, fill
at most `wave_cache_fraction` of the KV cache, so a node's prompt is still cached when its next
round extends it; within a call, prompts sharing a prefix go to the engine next to each other
(`prefix_order`). Imports vLLM only when built, so the rest of the package runs without it.
"""

from __future__ import annotations

import json

from action100m_hf.build.stages.aggregate.backends.base import (
    Generation,
    LLMBackend,
    common_prefix,
    harmony_final_text,
    harmony_structural_tag,
    is_harmony_model,
    prefix_order,
)
from action100m_hf.errors import ModelNotAvailableError, ProfileError

def waves_by_tokens(prompts: list[list[int]], budget: int) -> list[list[int]]:
    """Indices of `prompts` in waves: in `prefix_order`, each wave's distinct prompt tokens (a
    prompt's length less the prefix it shares with the wave's previous prompt) at most `budget`;
    a prompt longer than the budget goes alone."""
    waves: list[list[int]] = []
    used = 0
    previous: list[int] = []
    for i in prefix_order(prompts):
        prompt = prompts[i]
        new = len(prompt) - common_prefix(prompt, previous)
        if not waves or used + new > budget:
            waves.append([])
            used, new = 0, len(prompt)
        waves[-1].append(i)
        used += new
        previous = prompt
    return waves


class VLLMBackend(LLMBackend):
    """In-process `vllm.LLM`: a call's conversations go to the engine as one batch, in
    `prefix_order`; `plan_waves` bounds a Self-Refine wave by the KV cache."""

    name = "vllm"

    def __init__(self, generation: Generation, *, seed: int, structured_outputs_backend: str,
                 wave_cache_fraction: float, **engine_args):  # fmt: skip
        """`engine_args` go to `vllm.LLM` as they are (tensor_parallel_size, gpu_memory_utilization,
        enable_prefix_caching, enforce_eager, max_num_seqs, max_model_len, ...): the profile's
        `aggregate.backends.vllm` section. `wave_cache_fraction`: the share of the KV cache a
        Self-Refine wave's round-1 prompts may fill (`plan_waves`); the rest holds the tokens the
        wave's requests generate (gpt-oss's reasoning) and the drafts later rounds append."""
        super().__init__(generation)
        if not 0 < wave_cache_fraction <= 1:
            raise ProfileError(f"aggregate.backends.vllm.wave_cache_fraction must be in (0, 1], got {wave_cache_fraction}")
        self.wave_cache_fraction = wave_cache_fraction
        try:
            from vllm import LLM
        except ImportError as err:
            raise ModelNotAvailableError(f"the vllm backend needs the package vllm: {err}") from None
        # Compact JSON: without it a model may emit whitespace runs between fields.
        structured = {"backend": structured_outputs_backend, "disable_any_whitespace": True}
        try:
            self.llm = LLM(model=self.model, seed=seed, structured_outputs_config=structured, **engine_args)
        except OSError as err:
            raise ModelNotAvailableError(f"vllm cannot load model {self.model!r}: {err}") from None
        self.harmony = is_harmony_model(self.llm.llm_engine.model_config.hf_config)

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens the engine's KV cache holds (its blocks x block size)."""
        cache = self.llm.llm_engine.vllm_config.cache_config
        return cache.num_gpu_blocks * cache.block_size

    def prompt_ids(self, conversations: list[list[dict]]) -> list[list[int]]:
        """The token ids `llm.chat` would send: the tokenizer's chat template with the generation
        prompt (and the reasoning effort), encoded without adding special tokens."""
        tokenizer = self.llm.get_tokenizer()
        kwargs = self._chat_template_kwargs()
        return [
            tokenizer.encode(tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True, **kwargs),
                             add_special_tokens=False)  # fmt: skip
            for c in conversations
        ]

    def plan_waves(self, conversations: list[list[dict]]) -> list[list[int]]:
        """Indices of the round-1 `conversations` in Self-Refine waves: all rounds of a wave run
        before the next wave starts, and a wave's distinct round-1 prompt tokens fill at most
        `wave_cache_fraction` of the KV cache, so the engine still holds a node's prompt when the
        next round sends it again with the draft appended. One wave without prefix caching."""
        if not self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching:
            return [list(range(len(conversations)))]
        budget = int(self.wave_cache_fraction * self.kv_cache_tokens)
        return waves_by_tokens(self.prompt_ids(conversations), budget)

    def request_order(self, prompts: list[list[int]]) -> list[int]:
        """The order in which the engine receives a call's prompts (`prefix_order`)."""
        return prefix_order(prompts)

    def generate_ids(self, prompts: list[list[int]], params) -> list:
        """One `RequestOutput` per prompt (token ids), in the given order; the engine receives them
        in `request_order` as one batch."""
        from vllm.inputs import TokensPrompt

        order = self.request_order(prompts)
        results = self.llm.generate([TokensPrompt(prompt_token_ids=prompts[i]) for i in order], params, use_tqdm=False)
        outputs: list = [None] * len(prompts)
        for i, result in zip(order, results):
            outputs[i] = result
        return outputs

    def generate_json(self, conversations, schema, done=None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if self.harmony:
            constraint = StructuredOutputsParams(structural_tag=json.dumps(harmony_structural_tag(schema)))
        else:
            constraint = StructuredOutputsParams(json=schema)
        params = SamplingParams(
            max_tokens=self.generation.max_new_tokens,
            temperature=self.generation.temperature,
            structured_outputs=constraint,
            skip_special_tokens=not self.harmony,
        )
        results = self.generate_ids(self.prompt_ids(conversations), params)
        texts = [result.outputs[0].text for result in results]
        if done is not None:
            done(len(texts))
        return [harmony_final_text(t) for t in texts] if self.harmony else texts

    def prefix_cache_counters(self) -> dict[str, int]:
        """The engine's cumulative counters (needs `disable_log_stats: false`): prefix-cache
        `queries` and `hits` (tokens), `prompt_tokens`, `computed_tokens` (prefilled, not read
        from the cache) and `preemptions`."""
        names = {
            "vllm:prefix_cache_queries": "queries",
            "vllm:prefix_cache_hits": "hits",
            "vllm:prompt_tokens": "prompt_tokens",
            "vllm:num_preemptions": "preemptions",
        }
        counters = dict.fromkeys([*names.values(), "computed_tokens"], 0)
        for metric in self.llm.get_metrics():
            if metric.name in names:
                counters[names[metric.name]] += int(metric.value)
            elif metric.name == "vllm:prompt_tokens_by_source" and metric.labels.get("source") == "local_compute":
                counters["computed_tokens"] += int(metric.value)
        return counters
