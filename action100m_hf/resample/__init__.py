"""Semantic resampling (SPEC section 5): dedup, embed, k-means, draw uniformly over clusters."""
