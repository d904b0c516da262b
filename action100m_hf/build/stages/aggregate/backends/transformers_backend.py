"""The `transformers` backend: batched `generate` with a shared-prefix KV cache, constrained by an
xgrammar logits processor; for GPUs without vLLM and for CPU runs.

The conversations of one video share their first part (metadata, global tree, guidelines: the
prompt layout puts them first), so prompts are sorted by their token ids, which puts each video's
together, and cut into batches bounded in sequences and in tokens computed (the shared prefix once,
plus every sequence's own part, padded). A batch's common prefix is run once and its KV cache
expanded to the batch; only the own parts are prefilled per sequence. transformers' continuous
batching (`generate_batch`) takes no per-request logits processor, so it cannot apply the grammar:
this static batching with prefix reuse is the best batched path the library offers for it.
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
from action100m_hf.errors import ModelNotAvailableError

#: A common prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 32
#: Neighbouring prompts sharing less than this fraction of the shorter one belong to different
#: videos (the prompts of one video share their first half or more; of two videos, a few tokens).
SHARED_FRACTION = 0.25


def prefix_batches(prompts: list[list[int]], max_batch_size: int, max_batch_tokens: int) -> list[tuple[list[int], int]]:
    """Batches of prompt indices with the length of the prefix they share.

    Prompts are sorted by their tokens, so those sharing a prefix are neighbours; a group ends
    where two neighbours share less than `SHARED_FRACTION` of the shorter one (another video's
    prompts). Within a group, batches hold at most `max_batch_size` prompts and `max_batch_tokens`
    tokens computed (the shared prefix once plus each prompt's padded rest). The shared length
    leaves every prompt at least one token of its own; a batch of one shares nothing (it runs as
    a plain prompt), as does a prefix under `MIN_SHARED_PREFIX` tokens.
    """
    order = prefix_order(prompts)
    batches: list[tuple[list[int], int]] = []
    batch: list[int] = []
    shared = 0

    def close() -> None:
        batches.append((batch, shared if len(batch) > 1 and shared >= MIN_SHARED_PREFIX else 0))

    for i in order:
        if batch:
            neighbours = common_prefix(prompts[batch[-1]], prompts[i])
            same_group = neighbours >= SHARED_FRACTION * min(len(prompts[batch[-1]]), len(prompts[i]))
            prefix = min(shared, neighbours, len(prompts[i]) - 1)
            longest = max(len(prompts[j]) for j in (*batch, i))
            fits = len(batch) < max_batch_size and prefix + (len(batch) + 1) * (longest - prefix) <= max_batch_tokens
            if same_group and fits:
                batch.append(i)
                shared = prefix
                continue
            close()
        batch, shared = [i], len(prompts[i]) - 1
    if batch:
        close()
    return batches


class TransformersBackend(LLMBackend):
    """In-process batched `generate` with shared-prefix reuse, constrained by xgrammar."""

    name = "transformers"

    def __init__(self, generation: Generation, *, seed: int, max_batch_size: int, max_batch_tokens: int,
                 device: str | None = None, dtype: str = "auto"):  # fmt: skip
        """The profile's `aggregate.backends.transformers` section: `max_batch_size` sequences and
        `max_batch_tokens` tokens computed per generate call; `batch_size` (the out-of-memory
        policy halves it) starts at `max_batch_size`; 1 is the plain one-prompt-at-a-time path."""
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
        #: Tokens computed by the last `generate_json` (prefill, shared prefixes counted once).
        self.prefill_tokens = 0

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

    def _inputs(self, prompts: list[list[int]], shared: int):
        """Input ids and attention mask of a batch: the shared prefix, then each prompt's own
        part left-padded to the longest (pads between the two are masked; positions follow the
        mask, so every real token keeps its position in its own prompt)."""
        import torch

        pad = self.tokenizer.pad_token_id
        longest = max(len(p) - shared for p in prompts)
        ids, mask = [], []
        for p in prompts:
            fill = longest - (len(p) - shared)
            ids.append(p[:shared] + [pad] * fill + p[shared:])
            mask.append([1] * shared + [0] * fill + [1] * (len(p) - shared))
        return torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)

    def _prefix_cache(self, prefix: list[int], batch: int):
        """The KV cache of `prefix`, computed once and repeated for `batch` sequences."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.config)
        with torch.inference_mode():
            self.lm(input_ids=torch.tensor([prefix], device=self.device), cache=cache, use_cache=True)
        cache.batch_repeat_interleave(batch)
        return cache

    def generate_json(self, conversations, schema, done=None):
        import torch
        from xgrammar.contrib.hf import LogitsProcessor

        grammar = self._grammar(schema)
        prompts = self.prompt_ids(conversations)
        texts: list[str] = [""] * len(prompts)
        torch.manual_seed(self.seed)
        temperature = self.generation.temperature
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        self.prefill_tokens = 0
        for batch, shared in prefix_batches(prompts, self.batch_size, self.max_batch_tokens):
            members = [prompts[i] for i in batch]
            input_ids, attention_mask = self._inputs(members, shared)
            extra = {"cache": self._prefix_cache(members[0][:shared], len(batch))} if shared else {}
            self.prefill_tokens += shared + sum(len(p) - shared for p in members)
            with torch.inference_mode():
                out = self.lm.generate(
                    input_ids=input_ids, attention_mask=attention_mask, logits_processor=[LogitsProcessor(grammar)],
                    max_new_tokens=self.generation.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                    **sampling, **extra,
                )  # fmt: skip
            decoded = self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=not self.harmony)
            for i, text in zip(batch, decoded):
                texts[i] = harmony_final_text(text) if self.harmony else text
            if done is not None:
                done(len(batch))
        return texts
