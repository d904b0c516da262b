"""Stage `caption`: PerceptionLM and Llama-3.2-Vision captions of every node (SPEC section 3)."""
