"""Stage 2: the captioners of the Tree-of-Captions, behind one interface.

PerceptionLM-3B captions every node from evenly spaced frames (`plm_caption`) and names its main
action (`plm_action`); Llama-3.2-11B-Vision captions the middle frame of every leaf
(`llama3_caption`). A captioner takes a batch of `CaptionRequest`s and returns one text each;
`caption_tree` decodes the frames of a video's nodes, batches the requests and fills the fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from action100m_hf.build.settings import TINY_MODEL
from action100m_hf.errors import (
    Action100MError,
    AnnotationError,
    ModelNotAvailableError,
    VideoNotFoundError,
    is_out_of_memory,
)

PLM_MODEL_ID = "facebook/Perception-LM-3B"
#: The paper names the pretrained (base) model, not the -Instruct one.
LLAMA_MODEL_ID = "meta-llama/Llama-3.2-11B-Vision"

#: The paper's prompts.
PLM_CAPTION_PROMPT = "Describe this video in detail."
LLAMA_CAPTION_PROMPT = "Describe this image in detail."
#: Ours: the release does not publish the prompt behind `plm_action`.
PLM_ACTION_PROMPT = "What is the main action in this video? Answer with a short phrase."

KINDS = ("plm", "llama")
BACKENDS = ("transformers", "vllm")

#: Why there is no vLLM backend for either captioner (checked against vLLM 0.32's model registry).
VLLM_UNSUPPORTED = {
    "plm": (
        "vLLM 0.32 has no PerceptionLM implementation; its Transformers modeling backend serves "
        "PerceptionLMForConditionalGeneration without video inputs (the processor cannot count "
        "video tokens), and plm_caption needs 32-frame videos"
    ),
    "llama": (
        "vLLM 0.32 no longer serves MllamaForConditionalGeneration (Llama-3.2-Vision): its model "
        "registry lists it as removed after vLLM 0.10.2"
    ),
}


@dataclass(frozen=True)
class CaptionRequest:
    """One text to generate: `frames` (uint8 RGB, (N, H, W, 3)) of a node and the prompt."""

    video_uid: str
    node_id: str
    frames: np.ndarray
    prompt: str


def check_request(request: CaptionRequest, media: str) -> None:
    """Raise `AnnotationError` naming the video and node when the frames cannot be captioned."""
    frames = request.frames
    where = f"video {request.video_uid} node {request.node_id}"
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise AnnotationError(f"{where}: frames must be a uint8 numpy array, got {kind}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise AnnotationError(f"{where}: frames must have shape (N, H, W, 3) with N >= 1, got {frames.shape}")
    if media == "image" and frames.shape[0] != 1:
        raise AnnotationError(f"{where}: an image caption takes exactly one frame, got {frames.shape[0]}")


class Captioner:
    """A vision-language model with its processor, generating greedily with transformers.

    `media` is "video" (PerceptionLM: all frames of a request form one video) or "image"
    (Mllama: the request's single frame). `frame_times(start, end)` says which frames of a
    segment it reads and `frame_size` at which size (a square's side, None for native size).
    """

    def __init__(self, kind: str, model, processor, *, model_id: str, use_chat_template: bool,
                 batch_size: int, max_new_tokens: int, num_frames: int, frame_size: int | None):  # fmt: skip
        self.kind = kind
        self.media = "video" if kind == "plm" else "image"
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.use_chat_template = use_chat_template
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_frames = num_frames if kind == "plm" else 1
        self.frame_size = frame_size if kind == "plm" else None
        # Left padding keeps every prompt's last token at the end, where generation continues.
        processor.tokenizer.padding_side = "left"

    def frame_times(self, start: float, end: float) -> np.ndarray:
        """The times of the frames a node [start, end] is captioned from."""
        from action100m_hf.data.frames import segment_times

        # One evenly spaced frame is the middle frame (start + end) / 2.
        return segment_times(start, end, self.num_frames)

    def prompt_text(self, prompt: str) -> str:
        """The model's input text for a prompt: one user turn, or the base model's plain prompt."""
        if not self.use_chat_template:
            # A pretrained Llama-3.2-Vision is prompted "<|image|><|begin_of_text|>{text}"; the
            # processor inserts the begin-of-text token after the leading image token.
            return self.processor.image_token + prompt
        messages = [{"role": "user", "content": [{"type": self.media}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def caption(self, requests: list[CaptionRequest]) -> list[str]:
        """One generated text per request, in request order, `batch_size` requests at a time."""
        for request in requests:
            check_request(request, self.media)
        texts = []
        for first in range(0, len(requests), self.batch_size):
            texts.extend(self._generate(requests[first : first + self.batch_size]))
        return texts

    def _generate(self, batch: list[CaptionRequest]) -> list[str]:
        import torch

        text = [self.prompt_text(r.prompt) for r in batch]
        if self.media == "video":
            media = {"videos": [r.frames for r in batch]}
        else:
            media = {"images": [[r.frames[0]] for r in batch]}
        # The text already holds the begin-of-text token (chat template, or MllamaProcessor for a
        # plain prompt); the real Llama-3 tokenizers would add a second one.
        inputs = self.processor(text=text, **media, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _model_class(kind: str):
    from transformers import MllamaForConditionalGeneration, PerceptionLMForConditionalGeneration

    return PerceptionLMForConditionalGeneration if kind == "plm" else MllamaForConditionalGeneration


def _resolve_device_dtype(device: str | None, dtype: str | None):
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown torch dtype {dtype!r}")
    return device, resolved


def build_captioner(kind: str, *, model: str, backend: str, device: str | None, dtype: str | None,
                    batch_size: int, max_new_tokens: int, num_frames: int, frame_size: int | None,
                    seed: int, use_chat_template: bool | None = None) -> Captioner:  # fmt: skip
    """The captioner of `kind` ("plm" or "llama"), loaded and ready.

    `model` is a Hub id, a folder, or "tiny" (a random model of the same architecture built
    offline with `seed`, `tiny.py`). `num_frames` and `frame_size` (square side, None for native)
    describe PerceptionLM's video input; the Llama captioner always reads the middle frame at
    native size. Prompts use the model's chat template, except the paper's base
    Llama-3.2-11B-Vision, which is not chat-tuned and gets its plain
    "<|image|><|begin_of_text|>{prompt}" form; `use_chat_template` overrides. Greedy decoding up
    to `max_new_tokens`; bf16 on GPU, float32 on CPU unless `dtype` is given. Raises
    `ModelNotAvailableError` naming the model when it cannot be loaded.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown captioner kind {kind!r}; choose from {', '.join(KINDS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown captioner backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "vllm":
        raise ModelNotAvailableError(f"no vLLM backend for the {kind} captioner: {VLLM_UNSUPPORTED[kind]}; "
                                     "use backend='transformers'")  # fmt: skip
    if batch_size < 1 or max_new_tokens < 1 or num_frames < 1:
        raise ValueError(
            f"batch_size, max_new_tokens and num_frames must be at least 1, got {batch_size}, "
            f"{max_new_tokens}, {num_frames}"
        )
    model_id = model
    if model == TINY_MODEL:
        from action100m_hf.build.stages.caption.tiny import build_tiny_mllama, build_tiny_perception_lm

        model_id = str((build_tiny_perception_lm if kind == "plm" else build_tiny_mllama)(seed=seed))
    if use_chat_template is None:
        use_chat_template = model_id != LLAMA_MODEL_ID
    device, torch_dtype = _resolve_device_dtype(device, dtype)
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model_id)
        model = _model_class(kind).from_pretrained(model_id, dtype=torch_dtype, device_map=device).eval()
    except Exception as error:  # any failure to load is the same fact for the user: no model
        raise ModelNotAvailableError(f"cannot load the {kind} captioner model {model_id!r}: {error}") from error
    if use_chat_template and processor.chat_template is None:
        raise ModelNotAvailableError(f"captioner model {model_id!r} has no chat template; "
                                     "pass use_chat_template=False for a plain prompt")  # fmt: skip
    return Captioner(kind, model, processor, model_id=model_id, use_chat_template=use_chat_template,
                     batch_size=batch_size, max_new_tokens=max_new_tokens, num_frames=num_frames,
                     frame_size=frame_size)  # fmt: skip


# --- a video's tree -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """Why one request produced no text."""

    reason: str


def _caption_isolating_failures(captioner: Captioner, requests: list[CaptionRequest]) -> list[str | _Failure]:
    """Texts of the requests; when a batch fails, its requests run alone to find the failing ones.

    Returns, per request, its text or, for a failed request, an `_Failure` with the reason.
    Out of memory on a batch of several requests is re-raised: the caller (the builder's
    `with_oom_retry`) halves the batch size and tries again; alone, it fails that request only.
    """
    results: list = []
    for first in range(0, len(requests), captioner.batch_size):
        batch = requests[first : first + captioner.batch_size]
        try:
            results.extend(captioner.caption(batch))
            continue
        except Exception as error:  # which request failed is unknown yet; each one alone tells
            if len(batch) > 1 and is_out_of_memory(error):
                raise
        for request in batch:
            try:
                results.extend(captioner.caption([request]))
            except Exception as error:
                results.append(_Failure(f"{captioner.kind} captioner ({captioner.model_id}): {error}"))
    return results


def _read_frames(decoder, video_path: str, captioner: Captioner, node: dict):
    size = None if captioner.frame_size is None else (captioner.frame_size, captioner.frame_size)
    times = captioner.frame_times(float(node["start"]), float(node["end"]))
    return decoder.frames_at(video_path, times, size=size).frames


def caption_tree(nodes: list[dict], video_path: str | os.PathLike, plm: Captioner | None,
                 llama: Captioner | None, *, decoder=None,
                 video_uid: str | None = None) -> tuple[list[dict], dict[str, str]]:  # fmt: skip
    """Caption the nodes of one video: `plm_caption` and `plm_action` on every node,
    `llama3_caption` on leaves (a node that is no other node's parent).

    Returns new node dicts in the order of `nodes` and the failures, node id -> reason: a node
    whose frames cannot be decoded or whose generation fails keeps its fields unset; the other
    nodes go on. A missing video file raises `VideoNotFoundError`. `plm` or `llama` None leaves
    their fields as they are. `decoder` is a `frames.VideoDecoder` (default: the process's shared
    one); `video_uid` (for the requests) defaults to the file's stem.
    """
    from action100m_hf.data.frames import default_decoder

    video_path = str(video_path)
    video_uid = video_uid or Path(video_path).stem
    out = [dict(n) for n in nodes]
    if not os.path.exists(video_path):
        raise VideoNotFoundError(f"video {video_uid}: file not found: {video_path}")
    decoder = decoder or default_decoder()
    parents = {n.get("parent_id") for n in nodes}
    failed: dict[str, list[str]] = {}

    # Frames are decoded for `batch_size` nodes at a time, which bounds the memory they take.
    jobs = []
    if plm is not None:
        jobs.append((plm, out, [("plm_caption", PLM_CAPTION_PROMPT), ("plm_action", PLM_ACTION_PROMPT)]))
    if llama is not None:
        leaves = [n for n in out if n["node_id"] not in parents]
        jobs.append((llama, leaves, [("llama3_caption", LLAMA_CAPTION_PROMPT)]))
    for captioner, targets, fields in jobs:
        for first in range(0, len(targets), captioner.batch_size):
            requests, slots = [], []
            for node in targets[first : first + captioner.batch_size]:
                try:
                    frames = _read_frames(decoder, video_path, captioner, node)
                except (Action100MError, ValueError) as error:  # ValueError: times out of order
                    failed.setdefault(node["node_id"], []).append(f"{captioner.kind} frames: {error}")
                    continue
                for field, prompt in fields:
                    requests.append(CaptionRequest(video_uid, node["node_id"], frames, prompt))
                    slots.append((node, field))
            for (node, field), text in zip(slots, _caption_isolating_failures(captioner, requests)):
                if isinstance(text, _Failure):
                    failed.setdefault(node["node_id"], []).append(f"{field}: {text.reason}")
                else:
                    node[field] = text
    return out, {n["node_id"]: "; ".join(failed[n["node_id"]]) for n in out if n["node_id"] in failed}
