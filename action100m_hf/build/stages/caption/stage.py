"""The `caption` stage: PerceptionLM captions and actions on every node, Llama-3.2-Vision captions
on every leaf's middle frame (SPEC section 3).

Settings are the profile's `caption` section; the models are the two captioners of
`captioners.py` (real checkpoints, or "tiny" random ones of the same architectures).
"""

from __future__ import annotations

from dataclasses import dataclass

from action100m_hf.build.settings import setting
from action100m_hf.build.stage import Stage, VideoResult, WorkItem
from action100m_hf.build.stages.caption.captioners import BACKENDS


@dataclass(frozen=True)
class CaptionSettings:
    """The two captioners and their generation settings."""

    #: PerceptionLM (every node): a Hub id, a folder, or "tiny".
    plm_model: str = setting()
    #: Llama-3.2-Vision (leaves): a Hub id, a folder, or "tiny".
    llama_model: str = setting()
    backend: str = setting(choices=BACKENDS)
    device: str | None = setting(result=False)
    dtype: str | None = setting()
    #: Requests per generate call (halved on out-of-memory).
    batch_size: int = setting(minimum=1, result=False)
    max_new_tokens: int = setting(minimum=1)
    #: Evenly spaced frames per node for PerceptionLM, at `frame_size` pixels square.
    num_frames: int = setting(minimum=1)
    frame_size: int = setting(minimum=1)


class CaptionStage(Stage):
    name = "caption"
    title = "captions (PerceptionLM on every node, Llama-3.2-Vision on leaves)"
    Settings = CaptionSettings

    def load_models(self):
        from action100m_hf.build.stages.caption.captioners import build_captioner

        s = self.settings
        common = dict(backend=s.backend, device=s.device or self.device, dtype=s.dtype, batch_size=s.batch_size,
                      max_new_tokens=s.max_new_tokens, num_frames=s.num_frames, frame_size=s.frame_size,
                      seed=self.run_settings.seed)  # fmt: skip
        return (build_captioner("plm", model=s.plm_model, **common),
                build_captioner("llama", model=s.llama_model, **common))  # fmt: skip

    def run(self, items: list[WorkItem]) -> list[VideoResult]:
        from action100m_hf.build.stages.caption.captioners import caption_tree

        results = []
        for item in items:
            video = item.video
            plm, llama = self.models
            nodes, failures = caption_tree(item.row["nodes"], video.existing_path(), plm, llama, video_uid=video.video_uid)
            errors = [self.error(video.video_uid, reason, node_id) for node_id, reason in failures.items()]
            results.append(VideoResult({**item.row, "nodes": nodes}, errors))
        return results
