"""Found by the fuzzer: a tiny ``top_p`` (valid: it is > 0) kept no token and answered 500."""

from __future__ import annotations

import pytest

from neocloud.studio.engines.base import Sampling
from neocloud.studio.engines.batching import _sample

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("top_p", [1.2e-80, 1e-45, 1e-9])
def test_a_tiny_top_p_keeps_the_likeliest_token(top_p: float) -> None:
    logits = torch.tensor([0.1, 3.0, 0.2, -1.0])
    sampling = Sampling(max_tokens=1, temperature=0.25, top_p=top_p, stop=(), seed=None)
    generator = torch.Generator().manual_seed(0)
    assert _sample(logits, sampling, generator) == 1
