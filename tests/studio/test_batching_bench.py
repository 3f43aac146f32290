"""The GPU benchmark's ``--smoke`` mode: the same code on the CPU with a tiny Llama config.

It checks the batched decoder against transformers' ``generate()`` token for token (float32),
for a fresh random model with grouped-query attention and Llama-3's RoPE base.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "studio" / "bench_gpu.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_smoke_run_matches_generate_and_reports() -> None:
    bench = _bench()
    out = io.StringIO()
    result = bench.run(smoke=True, batches=[1, 3], prompt_len=8, gen_len=6, out=out)
    runs = {r["batch"]: r for r in result["runs"]}
    assert set(runs) == {1, 3}
    for batch, r in runs.items():
        assert r["match_prefix"] == 6  # the engine's greedy tokens are generate()'s
        assert r["engine_toks"] > 0
        assert r["generate_toks"] > 0
        assert r["roofline_toks"] == pytest.approx(batch * result["roofline_toks_per_seq"])
    assert result["roofline_toks_per_seq"] == pytest.approx(
        result["hbm_bytes_per_s"] / result["weight_bytes"]
    )
    text = out.getvalue()
    assert "engine tok/s" in text
    assert "12,500" in text  # the vLLM anchor is printed beside the figures
    assert "target" not in text  # targets are judged on the GPU run only


def test_gpu_script_runs_the_benchmark_and_refuses_without_a_gpu() -> None:
    script = BENCH.with_name("gpu.sh").read_text()
    assert "bench/studio/bench_gpu.py" in script
    assert "timeout 300" in script  # the 5-minute budget
    bench = _bench()
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.run(smoke=False, batches=[1], prompt_len=4, gen_len=4, out=io.StringIO())
