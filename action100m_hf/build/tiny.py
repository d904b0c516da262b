"""Tiny random models of the paper's architectures, built offline, for CPU runs and tests.

Every model-backed stage loads its model from a folder; in the "tiny" profile that folder comes
from here: a byte-level BPE tokenizer trained in-process on a built-in corpus, and randomly
initialised Llama / gpt-oss / PerceptionLM / Mllama models saved with `save_pretrained`, so
transformers (and vLLM for the causal LMs) load them exactly as they load the real checkpoints.
"""

from __future__ import annotations

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
DEFAULT_VOCAB_SIZE = 512
CAUSAL_LM_ARCHS = ("llama", "gpt_oss")

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
    """The built-in corpus: a few hundred deterministic sentences about hands-on activities."""
    sentences = []
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


def _token_ids(tokenizer) -> dict:
    """The pad / bos / eos ids a model config and its generation config need."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _cached_build(name: str, out_dir: str | Path | None, build) -> Path:
    """Run `build(tmp_dir)` unless `out_dir` (default: the cache folder `name`) is already built.

    The files are written to a temporary sibling folder and renamed into place, so a reader
    never sees half a model and concurrent builders (test workers) do not clash.
    """
    target = Path(out_dir) if out_dir is not None else tiny_cache_dir() / name
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


def _causal_lm_config(arch: str, tokenizer):
    from transformers import GptOssConfig, LlamaConfig

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        **_token_ids(tokenizer),
    )
    if arch == "llama":
        return LlamaConfig(intermediate_size=128, max_position_embeddings=16384, **common)
    if arch == "gpt_oss":
        return GptOssConfig(
            intermediate_size=64, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
            # gpt-oss's YaRN scaling (factor 32 over 4096) expects its native 131072 positions.
            sliding_window=16, max_position_embeddings=131072, **common,
        )
    raise ValueError(f"unknown tiny causal LM architecture {arch!r}; expected one of {CAUSAL_LM_ARCHS}")


def _save_with_generation_config(model, tokenizer, folder: Path) -> None:
    from transformers import GenerationConfig

    ids = _token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
    )
    model.save_pretrained(str(folder))


def build_tiny_causal_lm(arch: str, out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """A random tiny causal LM ("llama" or "gpt_oss") + tokenizer saved in one folder.

    The model's `vocab_size` equals the tokenizer's size (llguidance requires it).
    """
    if arch not in CAUSAL_LM_ARCHS:
        raise ValueError(f"unknown tiny causal LM architecture {arch!r}; expected one of {CAUSAL_LM_ARCHS}")

    def build(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = offline_tokenizer(folder)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_causal_lm_config(arch, tokenizer))
        _save_with_generation_config(model, tokenizer, folder)

    return _cached_build(f"{arch}-seed{seed}", out_dir, build)


def perception_lm_processor(tokenizer, tile_size: int = 28, pooling_ratio: int = 1, max_num_tiles: int = 1):
    """A PerceptionLM processor around `tokenizer`: video frames and image tiles of `tile_size` px.

    The defaults are the tiny profile's; PerceptionLM-3B uses 448 px, pooling 2 and 36 tiles.
    """
    from transformers import PerceptionLMImageProcessor, PerceptionLMProcessor, PerceptionLMVideoProcessor

    return PerceptionLMProcessor(
        image_processor=PerceptionLMImageProcessor(
            tile_size=tile_size, max_num_tiles=max_num_tiles, vision_input_type="thumb+tile"
        ),
        video_processor=PerceptionLMVideoProcessor(size={"height": tile_size, "width": tile_size}),
        tokenizer=tokenizer,
        patch_size=14,
        pooling_ratio=pooling_ratio,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_perception_lm(out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """A random tiny PerceptionLM (timm PE-core vision tower + small Llama) and its processor."""

    def build(folder: Path) -> None:
        import torch
        from transformers import (
            LlamaConfig,
            PerceptionLMConfig,
            PerceptionLMForConditionalGeneration,
            TimmWrapperConfig,
        )

        tokenizer = offline_tokenizer()
        vision = TimmWrapperConfig(
            architecture="vit_pe_core_large_patch14_336",
            do_pooling=False,
            model_args={"embed_dim": 64, "depth": 2, "num_heads": 2, "img_size": 28,
                        "global_pool": "", "ref_feat_shape": (2, 2)},
        )
        text = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            tie_word_embeddings=False, **_token_ids(tokenizer),
        )
        config = PerceptionLMConfig(
            vision_config=vision, text_config=text, projector_pooling_ratio=1,
            image_token_id=tokenizer.image_token_id, video_token_id=tokenizer.video_token_id,
        )
        torch.manual_seed(seed)
        model = PerceptionLMForConditionalGeneration(config)
        _save_with_generation_config(model, tokenizer, folder)
        perception_lm_processor(tokenizer).save_pretrained(str(folder))

    return _cached_build(f"perception_lm-seed{seed}", out_dir, build)


def build_tiny_mllama(out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """A random tiny Mllama (Llama-3.2-Vision architecture) and its processor."""

    def build(folder: Path) -> None:
        import torch
        from transformers import (
            MllamaConfig,
            MllamaForConditionalGeneration,
            MllamaImageProcessor,
            MllamaProcessor,
            MllamaTextConfig,
            MllamaVisionConfig,
        )

        tokenizer = offline_tokenizer()
        vision = MllamaVisionConfig(
            hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
            intermediate_size=64, image_size=28, patch_size=14, max_num_tiles=4,
            intermediate_layers_indices=[0, 1], vision_output_dim=96,
        )
        text = MllamaTextConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1],
            max_position_embeddings=4096, **_token_ids(tokenizer),
        )
        config = MllamaConfig(
            vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
        )
        torch.manual_seed(seed)
        model = MllamaForConditionalGeneration(config)
        # Mllama initialises its cross-attention gates at zero, so a random model would ignore
        # the image entirely; opening them makes the caption depend on the image, as it must.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                    param.fill_(1.0)
        _save_with_generation_config(model, tokenizer, folder)
        processor = MllamaProcessor(
            image_processor=MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=4),
            tokenizer=tokenizer,
            chat_template=CHAT_TEMPLATE,
        )
        processor.save_pretrained(str(folder))

    return _cached_build(f"mllama-seed{seed}", out_dir, build)
