"""Self-Refine: the LLM fills `gpt` on every internal node of at least 4 s (SPEC section 4).

Each node gets the prompt of `prompts`, then Self-Refine: a draft and revisions in one
conversation, every round constrained to the JSON schema. The nodes of all rows go to the
backend in the waves it plans (`plan_waves`: one wave of all nodes unless the engine's cache is bounded),
all rounds of a wave before the next, one batch per round. An output that stays invalid after
`retries` regenerations leaves the node's `gpt` null with an `ErrorRecord`; the run goes on.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

from action100m_hf.build.stages.aggregate import prompts
from action100m_hf.errors import AnnotationError
from action100m_hf.data.schema import NA_TEXT
from action100m_hf.data.tree import annotatable

# Spellings of "not applicable" a model writes instead of the release's "N/A".
_NA_PATTERN = re.compile(r"^[\s\"'“”‘’]*(n\s*/\s*a|n\.\s*a\.?|not applicable)[\s.\"'“”‘’]*$", re.I)
# C0 controls other than tab and newline carry no text (xgrammar can emit them in strings).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _clean_text(text: str) -> str:
    text = _CONTROL_CHARS.sub(" ", text).strip()
    return NA_TEXT if _NA_PATTERN.match(text) else text


def parse_annotation(text: str, schema: dict) -> dict:
    """The `gpt` value in a model's output, checked against `schema`'s keys.

    Raw control characters inside strings are accepted (json `strict=False`) and replaced by a
    space; strings are stripped and spellings of "not applicable" become "N/A". Raises
    `AnnotationError` saying what is wrong: not JSON, a missing or extra key, a non-string or
    empty value. `maxLength` is left to the decoder: it bounds what a random model writes, and
    a grammar counts it before invalid UTF-8 bytes become several replacement characters.
    """
    try:
        value = json.loads(text, strict=False)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"not JSON ({err.msg} at char {err.pos}): {text[:120]!r}") from None
    return _check_object(value, schema, "")


def _check_object(value, schema: dict, path: str):
    if schema["type"] == "string":
        if not isinstance(value, str):
            raise AnnotationError(f"{path}: expected a string, got {type(value).__name__}")
        text = _clean_text(value)
        if not text:
            raise AnnotationError(f"{path}: empty string")
        return text
    if not isinstance(value, dict):
        raise AnnotationError(f"{path or 'output'}: expected an object, got {type(value).__name__}")
    expected = schema["properties"]
    missing = [k for k in expected if k not in value]
    extra = [k for k in value if k not in expected]
    if missing or extra:
        raise AnnotationError(
            f"{path or 'output'}: missing keys {missing}, unexpected keys {extra}"
        )
    return {
        key: _check_object(value[key], sub, f"{path}.{key}" if path else key)
        for key, sub in expected.items()
    }


@dataclass
class NodeJob:
    """The Self-Refine state of one node: its conversation so far and its outcome."""

    video_uid: str
    node_id: str
    conversation: list[dict]
    gpt: dict | None = None
    error: str | None = None

    @property
    def draft(self) -> str:
        """The current annotation as the assistant's turn shows it to the next round."""
        return json.dumps(self.gpt, ensure_ascii=False)


def _generate_valid(backend, jobs: list[NodeJob], schema: dict, retries: int, round_no: int, done) -> None:
    """One round for `jobs`: generate, parse, regenerate the invalid ones up to `retries` times.

    A valid output becomes the job's `gpt`; a job that stays invalid gets its `error` set.
    """
    pending = list(jobs)
    last_error: dict[int, str] = {}
    for _attempt in range(retries + 1):
        if not pending:
            break
        outputs = backend.generate_json([job.conversation for job in pending], schema, done)
        failed = []
        for job, output in zip(pending, outputs):
            try:
                if isinstance(output, AnnotationError):
                    raise output
                job.gpt = parse_annotation(output, schema)
            except AnnotationError as err:
                last_error[id(job)] = str(err)
                failed.append(job)
        pending = failed
    for job in pending:
        job.gpt = None
        job.error = (
            f"Self-Refine round {round_no}: no valid output after {retries + 1} attempts; "
            f"last: {last_error[id(job)]}"
        )


def aggregate_rows(
    rows: list[dict],
    backend,
    *,
    rounds: int,
    retries: int,
    global_depth: int,
    subtree_depth: int,
    progress=None,
) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Rows with `gpt` filled on every annotatable node, and the failed nodes as
    `(video_uid, node_id, reason)`.

    `backend` is a `backends.LLMBackend`; the schema of every round bounds its strings to the
    backend's `max_string_length`. `progress(total=...)`, when given, makes a bar that counts
    node-rounds as the backend finishes them. The input rows are not modified.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    schema = prompts.response_schema(backend.max_string_length)
    out_rows = copy.deepcopy(rows)
    jobs: list[NodeJob] = []
    by_key: dict[tuple[str, str], dict] = {}
    for row in out_rows:
        targets = annotatable(row["nodes"])
        if not targets:
            continue
        for node in targets:
            node["gpt"] = None
            by_key[(row["video_uid"], node["node_id"])] = node
        for prompt in prompts.node_prompts(
            row.get("metadata"),
            row["nodes"],
            targets,
            schema,
            global_depth=global_depth,
            subtree_depth=subtree_depth,
        ):
            jobs.append(NodeJob(row["video_uid"], prompt.node_id, prompts.first_turn(prompt)))

    bar = progress(total=len(jobs) * rounds, desc="aggregate node-rounds", unit="node") if progress else None
    done = bar.update if bar is not None else None
    # vLLM plans waves small enough that a node's prompt is still cached in its next round.
    waves = backend.plan_waves([job.conversation for job in jobs]) if jobs else []
    try:
        for wave in waves:
            active = [jobs[i] for i in wave]
            for round_no in range(1, rounds + 1):
                if round_no > 1:
                    for job in active:
                        job.conversation = prompts.refine_turn(job.conversation, job.draft)
                _generate_valid(backend, active, schema, retries, round_no, done)
                active = [job for job in active if job.error is None]
    finally:
        if bar is not None:
            bar.close()

    failures = []
    for job in jobs:
        by_key[(job.video_uid, job.node_id)]["gpt"] = job.gpt
        if job.error is not None:
            failures.append((job.video_uid, job.node_id, job.error))
    return out_rows, failures
