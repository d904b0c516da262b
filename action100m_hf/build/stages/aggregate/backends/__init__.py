"""LLM backends of the aggregate stage: chat conversations in, JSON-schema-constrained texts out.

`vllm` (in-process offline batches, the production default), `openai` (any OpenAI-compatible
server over HTTP) and `transformers` (in-process generate with an xgrammar logits processor, for
GPUs without vLLM and CPU runs). Each backend's module is imported only when it is built.
"""

from __future__ import annotations

import importlib
import inspect

from action100m_hf.build.stages.aggregate.backends.base import Generation, LLMBackend
from action100m_hf.errors import ProfileError

#: backend name -> (module, class) inside this package.
_BACKENDS = {
    "vllm": ("vllm_backend", "VLLMBackend"),
    "openai": ("openai_backend", "OpenAIBackend"),
    "transformers": ("transformers_backend", "TransformersBackend"),
}
BACKENDS = tuple(_BACKENDS)


def build_llm_backend(name: str, generation: Generation, *, seed: int, **settings) -> LLMBackend:
    """The backend `name` for `generation` (its model already resolved to an id or folder).

    `settings` are the profile's `aggregate.backends.<name>` section, given to the backend class
    as keyword arguments (vllm's engine arguments; openai's `base_url`, `max_concurrency`, ...;
    transformers' `max_batch_size`, `max_batch_tokens`, `device`).
    """
    if name not in _BACKENDS:
        raise ValueError(f"unknown LLM backend {name!r}; expected one of {', '.join(BACKENDS)}")
    module, cls = _BACKENDS[name]
    backend_class = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    params = inspect.signature(backend_class.__init__).parameters
    named = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"seed"}
    missing = sorted(n for n in named if params[n].default is inspect.Parameter.empty and n not in settings)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [] if takes_any else sorted(set(settings) - named)
    if missing or unknown:
        raise ProfileError(
            f"aggregate.backends.{name}: "
            + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}", unknown and f"unknown {', '.join(unknown)}"]))
            + f" (the {name} backend takes {', '.join(sorted(named)) or 'engine arguments'})"
        )
    return backend_class(generation, seed=seed, **settings)


__all__ = ["BACKENDS", "Generation", "LLMBackend", "build_llm_backend"]
