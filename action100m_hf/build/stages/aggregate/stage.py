"""The `aggregate` stage: an LLM writes `gpt` (summary, action, actor) on every internal node of at
least 4 s, with Self-Refine and JSON-schema-constrained output (SPEC section 4).

Settings are the profile's `aggregate` section; the model is an LLM behind one of the backends of
`backends/` (vLLM in-process, an OpenAI-compatible server, or transformers). The nodes of
`batch_videos` videos go to the backend together, in waves the backend plans (vLLM: as many as
its prefix cache holds across the Self-Refine rounds), so an offline engine sees large batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from action100m_hf.build.settings import TINY_MODEL, setting
from action100m_hf.build.stage import Stage, VideoResult, WorkItem
from action100m_hf.build.stages.aggregate.backends import BACKENDS

REASONING_EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class AggregateSettings:
    """The LLM, its generation settings, Self-Refine and the prompt's tree depths."""

    backend: str = setting(choices=BACKENDS)
    #: A Hub id, a local folder, an OpenAI-compatible server's model name, or "tiny" (a random
    #: Llama with the offline tokenizer: a random gpt-oss stays in its analysis channel).
    model: str = setting()
    #: gpt-oss reasoning effort (chat template / API); null for models without one.
    reasoning_effort: str | None = setting(choices=REASONING_EFFORTS)
    temperature: float = setting(minimum=0)
    max_new_tokens: int = setting(minimum=1)
    #: maxLength of every string of the JSON schema (a random model never closes a string).
    max_string_length: int | None = setting(minimum=1)
    #: Self-Refine rounds: a draft, then revisions.
    rounds: int = setting(minimum=1)
    #: Regenerations of an output that is not a valid annotation, per round.
    retries: int = setting(minimum=0)
    #: Levels of the video's tree, and of the node's subtree, shown in the prompt.
    global_depth: int = setting(minimum=0)
    subtree_depth: int = setting(minimum=0)
    #: Videos whose nodes go to the backend as one batch.
    batch_videos: int = setting(minimum=1, result=False)
    #: Settings of each backend (the one named by `backend` is used), passed to its class.
    backends: dict = setting(result=False)

    def check(self) -> None:
        chosen = self.backends.get(self.backend)
        if not isinstance(chosen, dict):
            raise ValueError(f"backends.{self.backend} must be a mapping of the {self.backend} backend's settings")


class AggregateStage(Stage):
    name = "aggregate"
    title = "structured annotation (LLM with Self-Refine)"
    Settings = AggregateSettings

    def load_models(self):
        from action100m_hf.build.stages.aggregate.backends import Generation, build_llm_backend

        s = self.settings
        model = s.model
        if model == TINY_MODEL:
            from action100m_hf.build.stages.aggregate.tiny import build_tiny_causal_lm

            model = str(build_tiny_causal_lm("llama", seed=self.run_settings.seed))
        generation = Generation(model=model, reasoning_effort=s.reasoning_effort, max_string_length=s.max_string_length,
                                max_new_tokens=s.max_new_tokens, temperature=s.temperature)  # fmt: skip
        settings = dict(s.backends[s.backend])
        if s.backend == "transformers" and self.device and not settings.get("device"):
            settings["device"] = self.device
        return build_llm_backend(s.backend, generation, seed=self.run_settings.seed, **settings)

    def videos_per_call(self) -> int:
        return self.settings.batch_videos

    def run(self, items: list[WorkItem]) -> list[VideoResult]:
        from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows

        s = self.settings
        rows, failures = aggregate_rows(
            [item.row for item in items], self.models, rounds=s.rounds, retries=s.retries,
            global_depth=s.global_depth, subtree_depth=s.subtree_depth, progress=self.progress,
        )  # fmt: skip
        by_uid = {row["video_uid"]: row for row in rows}
        results = []
        for item in items:
            uid = item.video.video_uid
            errors = [self.error(uid, reason, node_id) for video_uid, node_id, reason in failures if video_uid == uid]
            results.append(VideoResult(by_uid[uid], errors))
        return results
