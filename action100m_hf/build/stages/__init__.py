"""The pipeline's stages, in order, one package each with the models it owns.

Adding a stage is one package with a `Stage` subclass and its settings class, listed here; its
profile section is named after it.
"""

from action100m_hf.build.stages.aggregate.stage import AggregateStage
from action100m_hf.build.stages.caption.stage import CaptionStage
from action100m_hf.build.stages.segment.stage import SegmentStage

#: The stages in pipeline order.
STAGES = (SegmentStage, CaptionStage, AggregateStage)
#: Stage name -> class.
STAGE_CLASSES = {stage.name: stage for stage in STAGES}
STAGE_NAMES = tuple(STAGE_CLASSES)
