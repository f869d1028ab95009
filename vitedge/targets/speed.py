"""The int8 export's own speed check: an int8 artifact timed against the fp32 model it was quantized from, on the
same runtime and this CPU, so that ``vitedge export --precision int8`` says which precision is faster here
(manifest ``quantization.speed``; the CLI warns when fp32 wins). The ONNX Runtime target
(:mod:`vitedge.targets.onnx`) and the OpenVINO target (:mod:`vitedge.targets.openvino`) run it.

A short measurement on a possibly busy machine: it says which precision to pick here; ``vitedge bench`` and
``benchmarks/quantization.py`` measure properly.
"""
from __future__ import annotations

import time
from typing import Callable

from ..timing import time_interleaved

SPEED_BUDGET_S = 0.4  # seconds an int8 export spends timing its artifact against fp32
ITERS = 5  # timed calls of each per round
MIN_ROUNDS, MAX_ROUNDS = 3, 50


def int8_vs_fp32(fp32_call: Callable[[], object], int8_call: Callable[[], object], *, threads: int, runtime: str,
                 budget_s: float = SPEED_BUDGET_S) -> dict:
    """Time ``int8_call`` against ``fp32_call`` (each runs one batch-1 inference of the same input) in alternating
    rounds of :data:`ITERS` calls, so that drifts in machine load hit both alike, for about ``budget_s`` seconds
    after two warm-up calls each (at least :data:`MIN_ROUNDS` rounds, at most :data:`MAX_ROUNDS`).

    ``threads``: the inference threads both were set up with; ``runtime``: the runtime's name and version. Both are
    recorded, not applied.
    Returns the manifest's ``quantization.speed`` block: ``speed_vs_fp32`` (int8 p50 / fp32 p50, below 1: int8 is
    faster), ``int8_p50_ms``, ``fp32_p50_ms``, ``faster`` ("int8" | "fp32"), ``batch`` (1), ``threads``,
    ``calls`` (timed calls of each), ``runtime``.
    Raises: whatever the calls raise (the export records a failed timing as ``skipped`` and goes on).
    """
    calls = {"fp32": fp32_call, "int8": int8_call}
    t0 = time.perf_counter()
    for call in calls.values():  # the warm-up calls, timed together to size the rounds
        call()
        call()
    per_pair = max((time.perf_counter() - t0) / 2, 1e-6)
    rounds = int(min(max(budget_s / (per_pair * ITERS), MIN_ROUNDS), MAX_ROUNDS))
    stats = time_interleaved({k: (lambda _x, call=call: call()) for k, call in calls.items()},
                             dict.fromkeys(calls), rounds, ITERS, warmup=0)
    f, q = stats["fp32"]["p50"], stats["int8"]["p50"]
    return {"speed_vs_fp32": round(q / f, 4), "int8_p50_ms": round(q, 4), "fp32_p50_ms": round(f, 4),
            "faster": "int8" if q < f else "fp32", "batch": 1, "threads": int(threads), "calls": rounds * ITERS,
            "runtime": runtime}
