"""Latency statistics and interleaved timing, shared by ``vitedge bench``, the benchmark scripts and the int8
exports' own speed check (:mod:`vitedge.targets.speed`). Layer 0: numpy and the standard library only, no torch.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["latency_stats", "time_interleaved"]


def latency_stats(samples_ms) -> dict:
    """mean/p50/p90/p99/min/max of latencies in ms (linear-interpolated percentiles)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "min": float(a.min()), "max": float(a.max())}


def time_interleaved(runners: dict, inputs: dict, rounds: int, iters: int, warmup: int, settle: int = 0) -> dict:
    """Latency stats (ms, :func:`latency_stats`) per key of ``runners`` from ``rounds`` rounds in which every
    runner runs ``iters`` timed calls in turn, after ``warmup`` untimed calls each.

    Interleaving makes drifts in machine load hit every runner alike, so ratios between them hold on a shared,
    noisy machine; p50 pools the samples of all rounds. ``runners[k]`` has ``run(x)`` (or is a callable), and
    ``inputs[k]`` is its input. ``iters`` may be an int or a dict key -> int (e.g. fewer calls at a large batch).
    ``settle``: untimed calls before each runner's timed calls in every round. The first call after another
    runtime ran pays for that runtime (its worker threads still spinning, caches holding its weights): measured
    on DeiT-Ti with OpenVINO, 20.6 and 15.4 ms for the first two calls after an ONNX Runtime batch-8 run, 12 ms
    from the third on; an app running one model never pays it.
    """
    def call(r):
        return r.run if hasattr(r, "run") else r
    n_iters = iters if isinstance(iters, dict) else {k: iters for k in runners}
    samples = {k: [] for k in runners}
    for k, r in runners.items():
        f = call(r)
        for _ in range(warmup):
            f(inputs[k])
    for _ in range(rounds):
        for k, r in runners.items():
            f, x = call(r), inputs[k]
            for _ in range(settle):
                f(x)
            for _ in range(n_iters[k]):
                t0 = time.perf_counter()
                f(x)
                samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: latency_stats(v) for k, v in samples.items()}
