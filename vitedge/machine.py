"""Machine description recorded with every benchmark: CPU model, cores, and the ISA features that change
int8/fp32/bf16 speed (AVX2, FMA, AVX-512, VNNI, BF16, AMX)."""
from __future__ import annotations

import os
import platform
import sys

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def machine_info() -> dict:
    """``{"cpu": model name, "cores": logical CPUs usable, "flags": [ISA features present], "os", "arch"}``."""
    cpu, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and cpu in ("unknown", "", platform.processor()):
                    cpu = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": cpu, "cores": cores, "flags": [f for f in ISA_FLAGS if f in flags],
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
