"""Stage-2 captioners on tiny random PerceptionLM / Mllama models and a synthetic video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from action100m_hf.build.stages.caption.captioners import (
    LLAMA_CAPTION_PROMPT,
    PLM_ACTION_PROMPT,
    PLM_CAPTION_PROMPT,
    CaptionRequest,
    Captioner,
    build_captioner,
    caption_tree,
)
from action100m_hf.errors import AnnotationError, ModelNotAvailableError, VideoNotFoundError
from action100m_hf.data.frames import VideoDecoder
from action100m_hf.data.synthetic import make_scene_video
from action100m_hf.data.tree import TreeNode, flatten

UID = "capTest0001"
FRAMES = 4
SIZE = 28


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTION100M_HF_CACHE", str(tmp_path_factory.mktemp("a100m-cache")))
        yield


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / f"{UID}.mp4"
    scenes = [(1.0, (200, 30, 30)), (1.0, (30, 200, 30)), (1.0, (30, 30, 200)), (1.0, (220, 220, 40))]
    make_scene_video(path, scenes, fps=25, size=(64, 48))
    return path


@pytest.fixture(scope="module")
def nodes():
    """Root [0, 4] -> [0, 2] (-> [0, 1], [1, 2]) and [2, 4]: leaves [0, 1], [1, 2], [2, 4]."""
    root = TreeNode(0.0, 4.0, [TreeNode(0.0, 2.0, [TreeNode(0.0, 1.0), TreeNode(1.0, 2.0)]), TreeNode(2.0, 4.0)])
    return flatten(UID, root)


#: The tiny captioners' settings besides the generation ones.
TINY = dict(model="tiny", backend="transformers", device=None, dtype=None, seed=0)


@pytest.fixture(scope="module")
def plm(cache):
    return build_captioner("plm", **TINY, batch_size=3, max_new_tokens=6, num_frames=FRAMES, frame_size=SIZE)


@pytest.fixture(scope="module")
def llama(cache):
    return build_captioner("llama", **TINY, batch_size=2, max_new_tokens=6, num_frames=1, frame_size=None)


@pytest.fixture(scope="module")
def captioned(nodes, video, plm, llama):
    return caption_tree(nodes, video, plm, llama, decoder=VideoDecoder(backend="pyav"))


def is_leaf(node, nodes):
    return all(n["parent_id"] != node["node_id"] for n in nodes)


def test_every_node_gets_plm_fields_and_only_leaves_get_llama(nodes, captioned):
    out, failures = captioned
    assert failures == {}
    assert [n["node_id"] for n in out] == [n["node_id"] for n in nodes]
    assert [(n["start"], n["end"]) for n in out if is_leaf(n, out)] == [(2.0, 4.0), (0.0, 1.0), (1.0, 2.0)]
    for node in out:
        assert isinstance(node["plm_caption"], str) and isinstance(node["plm_action"], str)
        if is_leaf(node, out):
            assert isinstance(node["llama3_caption"], str)
        else:
            assert node["llama3_caption"] is None
        assert node["gpt"] is None
    # New dicts: the input nodes are untouched.
    assert all(n["plm_caption"] is None for n in nodes)
    # Random models, yet the texts depend on the frames: not every node reads the same.
    assert len({n["plm_caption"] for n in out}) > 1


def test_batched_captions_equal_one_request_at_a_time(video, captioned, plm, llama):
    out, _ = captioned
    decoder = VideoDecoder(backend="pyav")
    for node in out:
        frames = decoder.frames_at(video, plm.frame_times(node["start"], node["end"]), size=(SIZE, SIZE)).frames
        assert frames.shape == (FRAMES, SIZE, SIZE, 3)
        for field, prompt in [("plm_caption", PLM_CAPTION_PROMPT), ("plm_action", PLM_ACTION_PROMPT)]:
            assert plm.caption([CaptionRequest(UID, node["node_id"], frames, prompt)]) == [node[field]]
        if is_leaf(node, out):
            middle = decoder.frames_at(video, llama.frame_times(node["start"], node["end"])).frames
            assert middle.shape == (1, 48, 64, 3)
            request = CaptionRequest(UID, node["node_id"], middle, LLAMA_CAPTION_PROMPT)
            assert llama.caption([request]) == [node["llama3_caption"]]


def test_frame_times_are_evenly_spaced_and_the_leaf_frame_is_the_middle(plm, llama):
    assert plm.frame_times(0.0, 4.0).tolist() == [0.5, 1.5, 2.5, 3.5]
    assert llama.frame_times(2.0, 4.0).tolist() == [3.0]
    assert (llama.num_frames, llama.frame_size, plm.frame_size) == (1, None, SIZE)


def test_prompts_follow_the_chat_template(plm, llama):
    assert plm.prompt_text(PLM_CAPTION_PROMPT) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|video|>Describe this video in detail."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert "<|image|>Describe this image in detail.<|eot_id|>" in llama.prompt_text(LLAMA_CAPTION_PROMPT)


def test_plain_prompt_for_a_base_model(cache, video):
    base = build_captioner("llama", **TINY, batch_size=8, max_new_tokens=4, num_frames=1, frame_size=None,
                           use_chat_template=False)
    assert base.prompt_text(LLAMA_CAPTION_PROMPT) == "<|image|>Describe this image in detail."
    frames = VideoDecoder(backend="pyav").frames_at(video, [0.5]).frames
    inputs = base.processor(text=[base.prompt_text(LLAMA_CAPTION_PROMPT)], images=[[frames[0]]])
    tokens = base.processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0][:2])
    assert tokens == ["<|image|>", "<|begin_of_text|>"]
    [text] = base.caption([CaptionRequest(UID, "n", frames, LLAMA_CAPTION_PROMPT)])
    assert isinstance(text, str)


class FailingOnNode(Captioner):
    """The tiny model, except that any batch holding one node fails (as a model error would)."""

    bad_node = ""

    def _generate(self, batch):
        if any(r.node_id == self.bad_node for r in batch):
            raise RuntimeError(f"generation failed on {self.bad_node}")
        return super()._generate(batch)


def test_failures_are_recorded_per_node_and_the_others_go_on(nodes, video, plm, llama, captioned):
    failing = FailingOnNode(
        "plm", plm.model, plm.processor, model_id=plm.model_id, use_chat_template=True, batch_size=plm.batch_size,
        max_new_tokens=plm.max_new_tokens, num_frames=plm.num_frames, frame_size=plm.frame_size,
    )  # fmt: skip
    failing.bad_node = nodes[2]["node_id"]  # the leaf [2, 4]
    bad_times = dict(nodes[4], node_id="reversed-node", start=3.0, end=1.0)
    out, failures = caption_tree(nodes + [bad_times], video, failing, llama, decoder=VideoDecoder(backend="pyav"))
    expected, _ = captioned
    assert list(failures) == [nodes[2]["node_id"], "reversed-node"]
    reasons = list(failures.values())
    assert f"generation failed on {nodes[2]['node_id']}" in reasons[0]
    assert "plm_caption" in reasons[0] and "plm_action" in reasons[0]
    assert reasons[1].startswith("plm frames: segment end 1.0 is before its start 3.0")
    assert "llama frames: segment end 1.0 is before its start 3.0" in reasons[1]
    # The failing node keeps its PLM fields unset; its Llama caption comes from the other model.
    assert out[2]["plm_caption"] is None and out[2]["plm_action"] is None
    assert out[2]["llama3_caption"] == expected[2]["llama3_caption"] is not None
    assert out[5]["plm_caption"] is None and out[5]["llama3_caption"] is None
    # The other nodes, batched together with the failing one, get the same texts as before.
    for got, want in zip(out[:5], expected):
        if got["node_id"] != failing.bad_node:
            assert (got["plm_caption"], got["plm_action"]) == (want["plm_caption"], want["plm_action"])


def test_missing_video_names_the_video_and_file(nodes, tmp_path, plm):
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoNotFoundError) as error:
        caption_tree(nodes, missing, plm, None)
    assert str(error.value) == f"video nowhere: file not found: {missing}"


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), "frames must be a uint8 numpy array, got float32"),
        (np.zeros((8, 8, 3), np.uint8), "frames must have shape (N, H, W, 3) with N >= 1, got (8, 8, 3)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "got (0, 8, 8, 3)"),
    ],
)
def test_bad_frames_name_the_video_and_node(plm, frames, message):
    with pytest.raises(AnnotationError) as error:
        plm.caption([CaptionRequest("vidX", "node7", frames, PLM_CAPTION_PROMPT)])
    assert str(error.value).startswith("video vidX node node7: ")
    assert message in str(error.value)


def test_image_captioner_takes_one_frame(llama):
    two_frames = CaptionRequest("vidX", "node7", np.zeros((2, 8, 8, 3), np.uint8), LLAMA_CAPTION_PROMPT)
    with pytest.raises(AnnotationError, match="video vidX node node7: an image caption takes exactly one frame, got 2"):
        llama.caption([two_frames])


def test_unavailable_models_and_backends_are_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotAvailableError, match=f"cannot load the plm captioner model '{missing}'"):
        build_captioner("plm", **{**SMALL, "model": str(missing)})
    with pytest.raises(ModelNotAvailableError, match="MllamaForConditionalGeneration.*0.10.2"):
        build_captioner("llama", **{**SMALL, "backend": "vllm"})
    with pytest.raises(ModelNotAvailableError, match="no PerceptionLM implementation"):
        build_captioner("plm", **{**SMALL, "backend": "vllm"})
    with pytest.raises(ValueError, match="unknown captioner kind 'blip'"):
        build_captioner("blip", **SMALL)


SMALL = dict(TINY, batch_size=1, max_new_tokens=2, num_frames=2, frame_size=28)


class OutOfMemoryOnNode(Captioner):
    """A real captioner that runs out of memory on any batch holding `bad_node`."""

    bad_node = None

    def _generate(self, batch):
        if any(r.node_id == self.bad_node for r in batch):
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return super()._generate(batch)


def test_out_of_memory_on_a_batch_is_raised_and_alone_is_recorded(nodes, video, plm, llama, captioned):
    def captioner(batch_size):
        oom = OutOfMemoryOnNode(
            "plm", plm.model, plm.processor, model_id=plm.model_id, use_chat_template=True, batch_size=batch_size,
            max_new_tokens=plm.max_new_tokens, num_frames=plm.num_frames, frame_size=plm.frame_size,
        )  # fmt: skip
        oom.bad_node = nodes[2]["node_id"]
        return oom

    # Several requests per batch: the builder must halve the batch, so the error goes up.
    with pytest.raises(torch.OutOfMemoryError):
        caption_tree(nodes, video, captioner(4), llama, decoder=VideoDecoder(backend="pyav"))
    # One request per batch: only that node fails, with a record; the others are captioned.
    out, failures = caption_tree(nodes, video, captioner(1), llama, decoder=VideoDecoder(backend="pyav"))
    assert list(failures) == [nodes[2]["node_id"]]
    assert "out of memory" in failures[nodes[2]["node_id"]]
    expected, _ = captioned
    assert [n["plm_caption"] for i, n in enumerate(out) if i != 2] == [
        n["plm_caption"] for i, n in enumerate(expected) if i != 2
    ]
