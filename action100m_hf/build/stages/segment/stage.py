"""The `segment` stage: a video file in, its Tree-of-Captions without captions out (SPEC section 2).

Settings are the profile's `segment` section; the model is the frame encoder (`encoders.py`);
the tree comes from Ward linkage over the encoder's features (`ward.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from action100m_hf.build.settings import setting
from action100m_hf.build.stage import Stage, VideoResult, WorkItem
from action100m_hf.build.stages.segment.encoders import ENCODER_NAMES
from action100m_hf.data.schema import METADATA_FIELDS


@dataclass(frozen=True)
class SegmentSettings:
    """The frame encoder and the tree's shortest split."""

    #: "vjepa2" (the paper's) or "pixel" (model-free colour layout).
    encoder: str = setting(choices=ENCODER_NAMES)
    #: V-JEPA 2 weights: a Hub id, a local folder, or "tiny" (seeded random, same architecture).
    model: str | None = setting()
    device: str | None = setting(result=False)
    dtype: str | None = setting()
    #: 64-frame windows per forward pass (halved on out-of-memory).
    batch_size: int = setting(minimum=1, result=False)
    #: Seconds: a dendrogram node is split only if both halves last at least this long.
    min_leaf: float = setting(minimum=0)

    def check(self) -> None:
        if self.encoder == "vjepa2" and not self.model:
            raise ValueError("encoder vjepa2 needs a model (a Hub id, a folder or tiny)")


def video_metadata(record: dict | None, duration: float) -> dict:
    """The row's metadata: the given record, with `duration` (whole seconds) from the video when absent."""
    out = dict.fromkeys(METADATA_FIELDS)
    out.update(record or {})
    if out["duration"] is None:
        out["duration"] = int(round(duration))
    return out


class SegmentStage(Stage):
    name = "segment"
    title = "temporal segmentation (encoder features -> Ward tree)"
    Settings = SegmentSettings
    reads_rows = False

    def load_models(self):
        from action100m_hf.build.stages.segment.encoders import build_encoder

        s = self.settings
        return build_encoder(s.encoder, model=s.model, device=s.device or self.device, dtype=s.dtype,
                             batch_size=s.batch_size, seed=self.run_settings.seed)  # fmt: skip

    def run(self, items: list[WorkItem]) -> list[VideoResult]:
        from action100m_hf.build.stages.segment.ward import segment_video

        results = []
        for item in items:
            video = item.video
            seg = segment_video(video.existing_path(), video.video_uid, self.models, min_leaf=self.settings.min_leaf)
            row = {"video_uid": video.video_uid, "metadata": video_metadata(video.metadata, seg.duration),
                   "nodes": list(seg.nodes)}  # fmt: skip
            results.append(VideoResult(row))
        return results
