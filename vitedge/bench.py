"""Latency and throughput of an artifact in its runtime, in the benchmark JSON schema shared with the C++ tool.

Schema: ``{"artifact", "runtime", "device", "batch", "threads", "warmup", "iters", "latency_ms": {"mean", "p50",
"p90", "p99", "min", "max"}, "throughput_ips", "peak_rss_mb", "artifact_mb", "machine": {...}}``.
Latency is wall time of one ``run`` call (ms); percentiles interpolate linearly between closest ranks
(numpy's default, the same as the C++ tool); ``throughput_ips`` = batch / mean latency in images per second;
``peak_rss_mb`` is the process's peak resident set (MiB) and ``artifact_mb`` the artifact's files (MiB).
"""
from __future__ import annotations

import resource
import time

import numpy as np

from . import progress as stages
from .errors import UsageError
from .machine import machine_info
from .runtime import check_input, open_artifact
from .timing import latency_stats, time_interleaved  # noqa: F401 - re-exported (benchmarks/, tests)

__all__ = ["bench", "latency_stats", "time_interleaved"]


def _input(art, batch: int, images, input_size) -> np.ndarray:
    from .data import bundled_photo_paths, image_paths, load_batch  # imports torch: not for a synthetic input
    spec = art.manifest["inputs"][0]["shape"]
    if input_size is not None:  # synthetic input of a requested size (checked against the artifact)
        x = np.random.default_rng(0).standard_normal((batch, spec[1], *input_size)).astype(np.float32)
    else:
        paths = image_paths(images) if images else bundled_photo_paths()
        photos = load_batch(paths, art.manifest["preprocessing"]).numpy()
        x = photos[np.arange(batch) % len(photos)]
    x = np.ascontiguousarray(x)
    check_input(art, x)
    return x


def bench(path, *, batch: int = 1, threads: int | None = None, warmup: int = 10, iters: int = 50,
          images=None, input_size: tuple[int, int] | None = None, progress: bool = False,
          verify: bool = True, trusted_keys=None, trust_code: bool = False, device: str | None = None) -> dict:
    """Time ``iters`` runs of the artifact at ``path`` after ``warmup`` runs, on real preprocessed photos.

    Args:
        batch: images per run (B of the (B, C, H, W) float32 input); photos repeat to fill it.
        threads: intra-op threads (default: the CPUs this process may use).
        images: folder of images to use instead of the bundled photos.
        input_size: (H, W) of a synthetic normal input instead of photos (checked against the artifact).
        progress: show a stage line (vitedge.progress, when on) and a progress bar over the timed runs on stderr.
        trusted_keys, trust_code: the trust rule of :func:`vitedge.runtime.open_artifact`.
        device: cpu (default), cuda or cuda:N (TorchScript and AOTInductor only; :mod:`vitedge.device`). On CUDA a
            timed call includes the input's copy to the GPU and the outputs' copy back (which waits for the GPU),
            as the C++ runner's ``run`` does.
    Returns:
        A dict in the benchmark schema (module docstring).
    Raises:
        UsageError: batch/iters out of range, or an input that does not fit the artifact.
        ArtifactError (SignatureError, UntrustedCodeError), ImageError, RuntimeMissingError.
    """
    if batch < 1 or iters < 1 or warmup < 0:
        raise UsageError(f"need batch >= 1, iters >= 1, warmup >= 0 (got {batch}, {iters}, {warmup})")
    machine = machine_info()
    threads = threads or machine["cores"]
    art, checked = open_artifact(path, threads=threads, verify=verify, trusted_keys=trusted_keys,
                                 trust_code=trust_code, device=device)
    fixed = art.manifest["inputs"][0]["shape"][0]
    if fixed > 0 and batch != fixed:
        raise UsageError(f"this artifact has a fixed batch of {fixed}; re-export with --batch dynamic to use {batch}")
    x = _input(art, batch, images, input_size)
    runner = checked.inner  # _input checked x once (check_input); the timed loop calls the bare runner
    if progress:
        stages.stage(f"{warmup} warm-up runs, then {iters} timed runs at batch {batch}")
    for _ in range(warmup):
        runner.run(x)
    times = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=iters, desc=f"bench {art.path.name}", unit="it", leave=False)
    for _ in range(iters):
        t0 = time.perf_counter()
        runner.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    lat = latency_stats(times)
    return {"artifact": str(art.path), "runtime": runner.runtime,
            "device": getattr(runner, "device", "cpu"), "batch": batch,
            "threads": threads, "warmup": warmup, "iters": iters, "latency_ms": lat,
            "throughput_ips": batch / (lat["mean"] / 1e3),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "artifact_mb": art.size_mb, "machine": machine}
