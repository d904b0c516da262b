"""LLM backends of stage 3: chat conversations in, JSON-schema-constrained texts out.

`vllm` (in-process offline batches, the production default), `openai` (any OpenAI-compatible
server over HTTP) and `transformers` (in-process generate with an xgrammar logits processor, for
CPU runs and tests). This module imports only the standard library at load time, so that
`python -m action100m_hf.build.stages.aggregate.backends` runs inside the separate vLLM environment.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from action100m_hf.errors import AnnotationError, ModelNotAvailableError


@dataclass(frozen=True)
class LLMProfile:
    """Model and generation settings of one run profile."""

    #: Model id or folder; None means the tiny random Llama of `tiny_models`.
    model: str | None
    #: gpt-oss reasoning effort passed to the chat template / API; None for other models.
    reasoning_effort: str | None
    #: maxLength of every string field of the schema (None: unbounded).
    max_string_length: int | None
    max_new_tokens: int
    temperature: float


PROFILES = {
    # gpt-oss-120b with high reasoning effort, as the paper; its recommended sampling (T = 1).
    "paper": LLMProfile("openai/gpt-oss-120b", "high", None, 32768, 1.0),
    # A random model never closes a string by itself: bound the strings and the output.
    "tiny": LLMProfile(None, None, 24, 320, 1.0),
}

# gpt-oss speaks the harmony format: reasoning in the analysis channel, then the answer in the
# final channel. Only the final channel is constrained to the schema.
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_STOPS = ("<|return|>", "<|end|>", "<|call|>")


def profile_settings(profile: str) -> LLMProfile:
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown LLM profile {profile!r}; expected one of {list(PROFILES)}") from None


def harmony_structural_tag(schema: dict) -> dict:
    """The xgrammar structural tag of a harmony reply: free analysis, then the final JSON."""
    return {
        "type": "structural_tag",
        "format": {
            "type": "sequence",
            "elements": [
                {
                    "type": "tag",
                    "begin": "<|channel|>analysis<|message|>",
                    "content": {"type": "any_text"},
                    "end": "<|end|>",
                },
                {"type": "const_string", "value": "<|start|>assistant"},
                {
                    "type": "tag",
                    "begin": _HARMONY_FINAL,
                    "content": {"type": "json_schema", "json_schema": schema},
                    "end": "",
                },
            ],
        },
    }


def harmony_final_text(completion: str) -> str:
    """The final-channel message of a harmony completion decoded with its special tokens."""
    _, found, final = completion.rpartition(_HARMONY_FINAL)
    if not found:
        return ""
    for stop in _HARMONY_STOPS:
        final = final.split(stop, 1)[0]
    return final


class LLMBackend(ABC):
    """Generates one schema-constrained text per conversation (`generate_json`).

    An item of the result is the model's text, or an `AnnotationError` when that one request
    was refused (the caller records it like an invalid output).
    """

    name = ""

    def __init__(self, model: str, profile: LLMProfile):
        self.model = model
        self.profile = profile

    @property
    def max_string_length(self) -> int | None:
        return self.profile.max_string_length

    def _chat_template_kwargs(self) -> dict:
        effort = self.profile.reasoning_effort
        return {"reasoning_effort": effort} if effort else {}

    @abstractmethod
    def generate_json(self, conversations: list[list[dict]], schema: dict) -> list[str | AnnotationError]:
        """One text per conversation, constrained to the JSON `schema`."""


def _is_harmony_model(config) -> bool:
    return getattr(config, "model_type", None) == "gpt_oss"


class VLLMBackend(LLMBackend):
    """In-process `vllm.LLM`: every conversation of a call goes to the engine as one batch."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        profile: LLMProfile,
        *,
        tensor_parallel_size: int = 1,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        structured_outputs_backend: str = "xgrammar",
        seed: int = 0,
    ):
        super().__init__(model, profile)
        try:
            from vllm import LLM
        except ImportError as err:
            raise ModelNotAvailableError(f"the vllm backend needs the package vllm: {err}") from None
        engine_args = dict(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            # Eager mode skips graph compilation: a faster start for short runs (tests, CPU).
            enforce_eager=enforce_eager,
            seed=seed,
            # Compact JSON: without it a model may emit whitespace runs between fields.
            structured_outputs_config={
                "backend": structured_outputs_backend,
                "disable_any_whitespace": True,
            },
        )
        for key, value in (
            ("max_num_seqs", max_num_seqs),
            ("max_num_batched_tokens", max_num_batched_tokens),
            ("max_model_len", max_model_len),
        ):
            if value is not None:
                engine_args[key] = value
        try:
            self.llm = LLM(**engine_args)
        except OSError as err:
            raise ModelNotAvailableError(f"vllm cannot load model {model!r}: {err}") from None
        self.harmony = _is_harmony_model(self.llm.llm_engine.model_config.hf_config)

    def generate_json(self, conversations, schema):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if self.harmony:
            constraint = StructuredOutputsParams(structural_tag=json.dumps(harmony_structural_tag(schema)))
        else:
            constraint = StructuredOutputsParams(json=schema)
        params = SamplingParams(
            max_tokens=self.profile.max_new_tokens,
            temperature=self.profile.temperature,
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
        return [harmony_final_text(t) for t in texts] if self.harmony else texts


class OpenAIBackend(LLMBackend):
    """An OpenAI-compatible server (vllm serve, SGLang): `max_concurrency` requests in flight,
    transient failures retried by the client `retries` times."""

    name = "openai"

    def __init__(
        self,
        model: str,
        profile: LLMProfile,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str = "EMPTY",
        max_concurrency: int = 64,
        retries: int = 3,
        timeout_s: float = 3600.0,
    ):
        super().__init__(model, profile)
        try:
            from openai import OpenAI
        except ImportError as err:
            raise ModelNotAvailableError(f"the openai backend needs the package openai: {err}") from None
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=retries, timeout=timeout_s)

    def _complete(self, conversation: list[dict], schema: dict) -> str | AnnotationError:
        import openai

        extra = {}
        if self.profile.reasoning_effort:
            extra["reasoning_effort"] = self.profile.reasoning_effort
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=conversation,
                max_completion_tokens=self.profile.max_new_tokens,
                temperature=self.profile.temperature,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "segment_annotation", "schema": schema, "strict": True},
                },
                **extra,
            )
        except openai.BadRequestError as err:
            # A request the server refuses (e.g. a prompt over the context length) fails that
            # node only; connection and server errors propagate after the client's retries.
            return AnnotationError(f"{self.base_url} refused the request: {err}")
        return response.choices[0].message.content or ""

    def generate_json(self, conversations, schema):
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda c: self._complete(c, schema), conversations))


class TransformersBackend(LLMBackend):
    """In-process `generate` in batches of `batch_size`, constrained by xgrammar."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        profile: LLMProfile,
        *,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
    ):
        super().__init__(model, profile)
        try:
            import torch
            import xgrammar
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise ModelNotAvailableError(
                f"the transformers backend needs torch, transformers and xgrammar: {err}"
            ) from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
            self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        except OSError as err:
            raise ModelNotAvailableError(f"transformers cannot load model {model!r}: {err}") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.lm.to(self.device).eval()
        self.batch_size = batch_size
        self.harmony = _is_harmony_model(self.lm.config)
        torch.manual_seed(seed)
        self.compiler = xgrammar.GrammarCompiler(
            xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.lm.config.vocab_size)
        )

    def _grammar(self, schema: dict):
        if self.harmony:
            return self.compiler.compile_structural_tag(json.dumps(harmony_structural_tag(schema)))
        return self.compiler.compile_json_schema(schema, any_whitespace=False)

    def generate_json(self, conversations, schema):
        import torch
        from xgrammar.contrib.hf import LogitsProcessor

        grammar = self._grammar(schema)
        texts: list[str] = []
        for first in range(0, len(conversations), self.batch_size):
            batch = conversations[first : first + self.batch_size]
            prompts = [
                self.tokenizer.apply_chat_template(
                    c, tokenize=False, add_generation_prompt=True, **self._chat_template_kwargs()
                )
                for c in batch
            ]
            # The chat template already writes the begin-of-text token.
            inputs = self.tokenizer(
                prompts, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.inference_mode():
                out = self.lm.generate(
                    **inputs,
                    logits_processor=[LogitsProcessor(grammar)],
                    max_new_tokens=self.profile.max_new_tokens,
                    do_sample=self.profile.temperature > 0,
                    # greedy decoding takes no temperature (transformers warns when given one)
                    **({"temperature": self.profile.temperature} if self.profile.temperature > 0 else {}),
                    pad_token_id=self.tokenizer.pad_token_id,
                    cache_implementation="static",
                )
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=not self.harmony)
            texts.extend(harmony_final_text(t) if self.harmony else t for t in decoded)
        return texts


_BACKEND_CLASSES = {cls.name: cls for cls in (VLLMBackend, OpenAIBackend, TransformersBackend)}
BACKENDS = tuple(_BACKEND_CLASSES)


def build_llm_backend(
    name: str,
    *,
    model: str | None = None,
    profile: str = "paper",
    generation: dict | None = None,
    **settings,
) -> LLMBackend:
    """The backend `name` ("vllm", "openai" or "transformers") for `profile` ("paper" or "tiny").

    `model` defaults to the profile's (gpt-oss-120b for "paper"; for "tiny", the tiny random
    Llama built by `tiny_models`). `generation` overrides the profile's generation settings
    (`LLMProfile` fields: temperature, max_new_tokens, max_string_length, reasoning_effort).
    `settings` go to the backend class (e.g. vllm's `tensor_parallel_size`, `max_num_seqs`,
    `max_num_batched_tokens`; openai's `base_url`, `max_concurrency`, `retries`; transformers'
    `batch_size`, `device`).
    """
    if name not in _BACKEND_CLASSES:
        raise ValueError(f"unknown LLM backend {name!r}; expected one of {list(BACKENDS)}")
    settings_of_profile = replace(profile_settings(profile), **(generation or {}))
    if model is None:
        model = settings_of_profile.model
    if model is None:
        from action100m_hf.build.tiny import build_tiny_causal_lm

        model = str(build_tiny_causal_lm("llama"))
    return _BACKEND_CLASSES[name](model, settings_of_profile, **settings)
