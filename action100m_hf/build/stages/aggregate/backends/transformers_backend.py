"""The `transformers` backend: in-process `generate`, constrained by an xgrammar logits processor.

For GPUs without vLLM and for CPU runs. Prompts are tokenised once, sorted by length and cut into
batches bounded both in sequences and in tokens (longest prompt x batch size), so memory does not
grow with the number of conversations; attention is SDPA, which never materialises the full
attention matrix of a long prompt where a fused kernel applies.
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


def token_batches(lengths: list[int], max_batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices of the prompts in batches: by decreasing length, each batch at most `max_batch_size`
    prompts and `max_batch_tokens` padded tokens (its longest prompt x its size); a prompt longer
    than the token bound goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]  # sorted: the batch's first prompt is its longest
            if len(batch) < max_batch_size and longest * (len(batch) + 1) <= max_batch_tokens:
                batch.append(i)
                continue
        batches.append([i])
    return batches


class TransformersBackend(LLMBackend):
    """In-process `generate` in token-bounded batches, constrained by xgrammar."""

    name = "transformers"

    def __init__(self, generation: Generation, *, seed: int, max_batch_size: int, max_batch_tokens: int,
                 device: str | None = None, dtype: str = "auto"):  # fmt: skip
        """The profile's `aggregate.backends.transformers` section: `max_batch_size` sequences and
        `max_batch_tokens` prompt tokens (padded) per generate call; `batch_size` (the
        out-of-memory policy halves it) starts at `max_batch_size`."""
        super().__init__(generation)
        try:
            import torch
            import xgrammar
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise ModelNotAvailableError(f"the transformers backend needs torch, transformers and xgrammar: {err}") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model, padding_side="left")
            self.lm = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype, attn_implementation="sdpa")
        except OSError as err:
            raise ModelNotAvailableError(f"transformers cannot load model {self.model!r}: {err}") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.lm.to(self.device).eval()
        self.batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.harmony = is_harmony_model(self.lm.config)
        self.seed = seed
        self.compiler = xgrammar.GrammarCompiler(
            xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.lm.config.vocab_size)
        )

    def _grammar(self, schema: dict):
        if self.harmony:
            return self.compiler.compile_structural_tag(json.dumps(harmony_structural_tag(schema)))
        return self.compiler.compile_json_schema(schema, any_whitespace=False)

    def prompt_ids(self, conversations: list[list[dict]]) -> list[list[int]]:
        """The token ids of each conversation's chat-template prompt, ready for generation."""
        texts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True,
                                               **self._chat_template_kwargs())  # fmt: skip
            for c in conversations
        ]
        # The chat template already writes the begin-of-text token.
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def generate_json(self, conversations, schema, done=None):
        import torch
        from xgrammar.contrib.hf import LogitsProcessor

        grammar = self._grammar(schema)
        prompts = self.prompt_ids(conversations)
        texts: list[str] = [""] * len(prompts)
        torch.manual_seed(self.seed)
        sampling = {"do_sample": True, "temperature": self.generation.temperature} if self.generation.temperature > 0 else {"do_sample": False}
        for batch in token_batches([len(p) for p in prompts], self.batch_size, self.max_batch_tokens):
            inputs = self.tokenizer.pad({"input_ids": [prompts[i] for i in batch]}, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.lm.generate(
                    **inputs,
                    logits_processor=[LogitsProcessor(grammar)],
                    max_new_tokens=self.generation.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=not self.harmony)
            for i, text in zip(batch, decoded):
                texts[i] = harmony_final_text(text) if self.harmony else text
            if done is not None:
                done(len(batch))
        return texts
