"""What the tiny stand-in models of every stage share: the offline tokenizer and the model cache.

A model setting "tiny" means a seeded random model of the paper's architecture, built offline and
saved with `save_pretrained` so that transformers (and vLLM) load it as they load the real
checkpoint. Each stage keeps its own builders beside its models (`stages/*/tiny.py`); they all use
the byte-level BPE tokenizer trained here in-process, and `cached_build`, which keys every built
folder by a hash of its recipe so that a changed recipe never serves an old model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
END_OF_TURN_TOKEN = "<|eot_id|>"
HEADER_START_TOKEN = "<|start_header_id|>"
HEADER_END_TOKEN = "<|end_header_id|>"
IMAGE_TOKEN = "<|image|>"
VIDEO_TOKEN = "<|video|>"
# MllamaProcessor looks this token up by name.
PYTHON_TAG_TOKEN = "<|python_tag|>"
SPECIAL_TOKENS = [
    PAD_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    END_OF_TURN_TOKEN,
    HEADER_START_TOKEN,
    HEADER_END_TOKEN,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    PYTHON_TAG_TOKEN,
]
#: Enough for the built-in corpus and the stage-3 prompt text to merge into whole words, so a tiny
#: model's prompts are about as many tokens as a real tokenizer's (~4 characters per token).
DEFAULT_VOCAB_SIZE = 2048
#: Bump when a builder changes in a way its hashed recipe does not show (e.g. weight surgery).
RECIPE_VERSION = 2

# Llama-3 style turns; a message's content is either a string or a list of
# {"type": "text"|"image"|"video"} items, rendered in their order.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] | trim }}"
    "{%- else %}"
    "{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif item['type'] == 'video' %}{{- '<|video|>' }}"
    "{%- elif item['type'] == 'text' %}{{- item['text'] | trim }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

_ACTORS = ["A man", "A woman", "The cook", "A child", "The person", "Two people", "A worker", "The player"]
_ACTIONS = [
    "cuts", "pours", "lifts", "opens", "washes", "paints", "folds", "stirs",
    "carries", "repairs", "cleans", "throws", "places", "mixes", "holds", "turns",
]
_OBJECTS = [
    "the onion", "a bowl of water", "the wooden board", "a red box", "the bicycle wheel",
    "a sheet of paper", "the frying pan", "a glass jar", "the garden hose", "a small brush",
    "the dough", "a metal pipe",
]
_PLACES = [
    "in the kitchen", "on the table", "near the window", "in a workshop", "outside the house",
    "at the sink", "on the floor", "in the garden",
]
_EXTRA_LINES = [
    "Describe this video in detail.",
    "Describe this image in detail.",
    "What is the main action in this video? Answer with a short phrase.",
    "The video shows a person performing a task with their hands.",
    "The camera is static and the lighting is bright.",
    '{"summary": {"brief": "", "detailed": ""}, "action": {"brief": "N/A", "detailed": "", "actor": ""}}',
    "## Segment 00:00:00 - 00:00:04",
    "- **Video caption**: the person stirs the soup.",
    "> A close-up of hands holding a knife.",
    "title: How to fix a bike | description: step by step | transcript: first we remove the wheel",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 30 45 60 0.5 1.25 12.00",
]


def training_corpus() -> list[str]:
    """The built-in corpus: a few hundred deterministic sentences about hands-on activities, and
    the stage-3 prompt's own text (task, guidelines, schema), which every aggregate prompt repeats."""
    from action100m_hf.build.stages.aggregate import prompts

    sentences = [prompts.TASK_TEMPLATE, prompts.VIDEO_CONTEXT_TEMPLATE, prompts.CURRENT_SEGMENT_TEMPLATE,
                 prompts.REFINE_INSTRUCTION, json.dumps(prompts.response_schema(None))]  # fmt: skip
    for i, actor in enumerate(_ACTORS):
        for j, action in enumerate(_ACTIONS):
            obj = _OBJECTS[(i * 5 + j) % len(_OBJECTS)]
            place = _PLACES[(i + j * 3) % len(_PLACES)]
            sentences.append(f"{actor} {action} {obj} {place}.")
            sentences.append(f"Then {actor.lower()} {action} {obj} slowly, while the camera stays close.")
    return sentences + _EXTRA_LINES


def tiny_cache_dir() -> Path:
    """Where built tiny models live: $ACTION100M_HF_CACHE/tiny, else ~/.cache/action100m_hf/tiny."""
    root = os.environ.get("ACTION100M_HF_CACHE") or Path.home() / ".cache" / "action100m_hf"
    return Path(root) / "tiny"


def offline_tokenizer(save_dir: str | Path | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """A byte-level BPE tokenizer trained in-process (same vocabulary on every call).

    It carries Llama-3 style special tokens, `image_token` / `video_token` attributes for the
    multimodal processors and a chat template; `eos_token` is the end-of-turn token so that
    generation stops at the end of the assistant's turn. Saved to `save_dir` when given.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS_TOKEN,
        eos_token=END_OF_TURN_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=16384,
    )
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def token_ids(tokenizer) -> dict:
    """The pad / bos / eos ids a model config and its generation config need."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def save_with_generation_config(model, tokenizer, folder: Path) -> None:
    """`model.save_pretrained(folder)` with a generation config holding the tokenizer's ids."""
    from transformers import GenerationConfig

    ids = token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
    )
    model.save_pretrained(str(folder))


def recipe_key(*parts) -> str:
    """A short hash of what a tiny model is built from: its config, seed, the tokenizer's corpus."""
    text = json.dumps([RECIPE_VERSION, DEFAULT_VOCAB_SIZE, training_corpus(), CHAT_TEMPLATE, *parts],
                      sort_keys=True, default=repr)  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def cached_build(name: str, recipe: str, out_dir: str | Path | None, build) -> Path:
    """Run `build(tmp_dir)` unless `out_dir` (default: the cache folder `name-recipe`) is built.

    The files are written to a temporary sibling folder and renamed into place, so a reader
    never sees half a model and concurrent builders (test workers) do not clash.
    """
    target = Path(out_dir) if out_dir is not None else tiny_cache_dir() / f"{name}-{recipe}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        if target.exists() and not any(target.iterdir()):
            target.rmdir()
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
