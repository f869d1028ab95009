"""Machine description recorded with every benchmark: CPU model, cores, and the ISA features that change
int8/fp32/bf16 speed (AVX2, FMA, AVX-512, VNNI, BF16, AMX)."""
from __future__ import annotations

import os
import platform
import sys

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """The CPU model and ISA features in the text of a Linux ``/proc/cpuinfo`` (this machine's, or one read on
    another over SSH: :mod:`vitedge.remote`).

    Returns:
        ``(model, flags)``: the first ``model name`` (None when absent, as on most aarch64 kernels) and the
        features of :data:`ISA_FLAGS` present in the first ``flags`` (x86) or ``Features`` (arm) line, in the
        order of :data:`ISA_FLAGS`.
    """
    cpu, flags = None, set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and cpu is None:
            cpu = val.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(val.split())
    return cpu, [f for f in ISA_FLAGS if f in flags]


def machine_info() -> dict:
    """``{"cpu": model name, "cores": logical CPUs usable, "flags": [ISA features present], "os", "arch"}``."""
    try:
        with open("/proc/cpuinfo") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:
        model, flags = None, []
    cpu = model or platform.processor() or "unknown"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": cpu, "cores": cores, "flags": flags,
            "os": f"{platform.system()} {platform.release()}", "arch": platform.machine()}


def default_threads() -> int:
    """The intra-op thread count a runtime gets when none is asked for: torch's setting if torch is already
    imported (``torch.set_num_threads`` applies to every runtime alike), else the CPUs this process may use.
    Runtimes that do not need torch (ONNX Runtime, OpenVINO) thus never import it, which keeps their cold start
    short (importing torch costs about a second)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
