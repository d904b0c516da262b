"""Stage `aggregate`: the LLM's structured annotation of long internal nodes, with Self-Refine (SPEC section 4)."""
