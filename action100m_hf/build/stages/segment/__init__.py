"""Stage `segment`: frames sampled from a video, encoded, and cut into a Tree-of-Captions (SPEC section 2)."""
