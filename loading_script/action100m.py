"""The `datasets` builder class of Action100M (every config, any source), as a loading script.

This file only exposes the library's class, `action100m_hf.data.builder.Action100M`, which
`action100m_hf.load()` runs. `datasets` removed loading scripts in 4.0; there, use the class:

    from loading_script.action100m import Action100M      # or: from action100m_hf.data.builder import ...
    builder = Action100M(config_name="brief_action", source="path/or/hf://.../*.parquet")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")          # or builder.as_streaming_dataset(split="train")

With `datasets` < 4: `load_dataset("loading_script/action100m.py", "brief_action", source=...,
trust_remote_code=True)`.
"""

from action100m_hf.data.builder import Action100M, Action100MConfig

__all__ = ["Action100M", "Action100MConfig"]
