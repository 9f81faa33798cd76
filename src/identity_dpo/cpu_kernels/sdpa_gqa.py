"""Grouped-query attention handed to torch's SDPA as it is, for CPU training.

Transformers' SDPA attention (transformers/integrations/sdpa_attention.py) copies each key/value head to every
query head it serves (repeat_kv) whenever there is an attention mask, and passes enable_gqa=True to torch only
without one, for the sake of CUDA kernels. Torch's CPU kernel takes the mask and the grouped heads as they are and
gives the same output bit for bit, without the copies (forward) and their sums (backward); what that saved:
docs/speed-history.md. Transformers' switch for it is an undocumented environment variable that
`use_gqa_in_sdpa` reads on every call: set here while training runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"  # read by transformers' use_gqa_in_sdpa on every attention call


@contextmanager
def grouped_query_attention_in_sdpa() -> Iterator[None]:
    """While in the block, transformers' SDPA attention passes the grouped key/value heads to torch (enable_gqa)
    instead of repeating them, even under an attention mask. A user's own setting of the switch is left as it is."""
    if FORCE_GQA in os.environ:
        yield
        return
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(FORCE_GQA, None)
