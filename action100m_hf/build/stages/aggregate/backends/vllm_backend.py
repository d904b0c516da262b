"""The `vllm` backend: in-process `vllm.LLM` offline batches (the production default).

Imports vLLM only when built, so that the rest of the package runs where vLLM is not installed.
"""

from __future__ import annotations

import json

from action100m_hf.build.stages.aggregate.backends.base import (
    Generation,
    LLMBackend,
    harmony_final_text,
    harmony_structural_tag,
    is_harmony_model,
)
from action100m_hf.errors import ModelNotAvailableError


class VLLMBackend(LLMBackend):
    """In-process `vllm.LLM`: every conversation of a call goes to the engine as one batch."""

    name = "vllm"

    def __init__(self, generation: Generation, *, seed: int, structured_outputs_backend: str, **engine_args):
        """`engine_args` go to `vllm.LLM` as they are (tensor_parallel_size, gpu_memory_utilization,
        enable_prefix_caching, enforce_eager, max_num_seqs, max_model_len, ...): the profile's
        `aggregate.backends.vllm` section."""
        super().__init__(generation)
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
        results = self.llm.chat(
            conversations,
            params,
            use_tqdm=False,
            chat_template_kwargs=self._chat_template_kwargs() or None,
        )
        texts = [result.outputs[0].text for result in results]
        if done is not None:
            done(len(texts))
        return [harmony_final_text(t) for t in texts] if self.harmony else texts
