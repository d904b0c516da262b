"""What every LLM backend of the aggregate stage shares: the interface (conversations in, one
JSON-schema-constrained text out each), the generation settings, and the harmony format of gpt-oss.

Standard library only, so that the backends run inside the separate vLLM environment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from action100m_hf.errors import AnnotationError


@dataclass(frozen=True)
class Generation:
    """What every backend generates with: the aggregate section's model and generation settings."""

    #: Model id or folder (a "tiny" setting is resolved to the built folder before this point).
    model: str
    #: gpt-oss reasoning effort passed to the chat template / API; None for other models.
    reasoning_effort: str | None
    #: maxLength of every string field of the schema (None: unbounded).
    max_string_length: int | None
    max_new_tokens: int
    temperature: float


# gpt-oss speaks the harmony format: reasoning in the analysis channel, then the answer in the
# final channel. Only the final channel is constrained to the schema.
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_STOPS = ("<|return|>", "<|end|>", "<|call|>")


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

    def __init__(self, generation: Generation):
        self.generation = generation
        self.model = generation.model

    @property
    def max_string_length(self) -> int | None:
        return self.generation.max_string_length

    def _chat_template_kwargs(self) -> dict:
        effort = self.generation.reasoning_effort
        return {"reasoning_effort": effort} if effort else {}

    def plan_waves(self, conversations: list[list[dict]]) -> list[list[int]]:
        """Indices of the round-1 conversations in Self-Refine waves: every round of a wave runs
        before the next wave starts. One wave of all by default; an engine with a bounded prefix
        cache plans smaller ones."""
        return [list(range(len(conversations)))]

    @abstractmethod
    def generate_json(self, conversations: list[list[dict]], schema: dict,
                      done: Callable[[int], None] | None = None) -> list[str | AnnotationError]:  # fmt: skip
        """One text per conversation, constrained to the JSON `schema`; `done(n)` is called as
        conversations finish (for progress bars)."""


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def prefix_order(prompts: list[list[int]]) -> list[int]:
    """Indices of `prompts` with prompts sharing a prefix next to each other: sorted by token ids,
    so a video's prompts are consecutive (ties keep their given order)."""
    return sorted(range(len(prompts)), key=prompts.__getitem__)


def is_harmony_model(config) -> bool:
    return getattr(config, "model_type", None) == "gpt_oss"
