"""The `openai` backend: any OpenAI-compatible server (vllm serve, SGLang) over HTTP."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from action100m_hf.build.stages.aggregate.backends.base import Generation, LLMBackend
from action100m_hf.errors import AnnotationError, ModelNotAvailableError


class OpenAIBackend(LLMBackend):
    """An OpenAI-compatible server (vllm serve, SGLang): `max_concurrency` requests in flight,
    transient failures retried by the client `retries` times."""

    name = "openai"

    def __init__(self, generation: Generation, *, seed: int, base_url: str, max_concurrency: int, retries: int,
                 timeout_s: float):  # fmt: skip
        """The profile's `aggregate.backends.openai` section; the API key comes from
        `OPENAI_API_KEY` (a local vLLM server needs none)."""
        super().__init__(generation)
        self.seed = seed
        try:
            from openai import OpenAI
        except ImportError as err:
            raise ModelNotAvailableError(f"the openai backend needs the package openai: {err}") from None
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        api_key = os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=retries, timeout=timeout_s)

    def _complete(self, conversation: list[dict], schema: dict) -> str | AnnotationError:
        import openai

        extra = {}
        if self.generation.reasoning_effort:
            extra["reasoning_effort"] = self.generation.reasoning_effort
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=conversation,
                max_completion_tokens=self.generation.max_new_tokens,
                temperature=self.generation.temperature,
                seed=self.seed,
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

    def generate_json(self, conversations, schema, done=None):
        def complete(conversation):
            text = self._complete(conversation, schema)
            if done is not None:
                done(1)
            return text

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(complete, conversations))
