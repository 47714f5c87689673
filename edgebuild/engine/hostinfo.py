"""What this host can build: its CUDA GPU (compute capability) and its TensorRT version.

Found without importing tensorrt or torch: `nvidia-smi` on desktops and servers, the device tree on
Jetsons, package metadata for TensorRT. EDGEBUILD_HOST_GPU ("8.7", or "none") and
EDGEBUILD_HOST_TENSORRT ("10.3", or "none") and EDGEBUILD_HOST_MODEL (a board's model string) override detection, for unusual hosts and for tests of
the routing itself. Also the CPU's hardware class, which a measurement's key takes (EDGEBUILD_HOST_CPU
names the CPU model instead of /proc/cpuinfo, for tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

JETSON_SM = (("orin", "8.7"), ("xavier", "7.2"), ("tx2", "6.2"), ("nano", "5.3"))


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str     # "8.7"


@lru_cache(maxsize=None)
def gpu() -> Gpu | None:
    env = os.environ.get("EDGEBUILD_HOST_GPU")
    if env is not None:
        return None if env.lower() in ("", "none") else Gpu(f"sm_{env.replace('.', '')} (EDGEBUILD_HOST_GPU)", env)
    return _nvidia_smi() or _jetson()


def _nvidia_smi() -> Gpu | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or "," not in out[0]:
        return None
    name, cap = (x.strip() for x in out[0].rsplit(",", 1))
    return Gpu(name, cap)


def _jetson() -> Gpu | None:
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return None
    if "jetson" not in model.lower():
        return None
    cap = next((c for key, c in JETSON_SM if key in model.lower()), None)
    return Gpu(model, cap) if cap else None


@lru_cache(maxsize=None)
def device_model() -> str | None:
    """The board's model string (a Jetson's or a Raspberry Pi's device tree), or None on other hosts;
    EDGEBUILD_HOST_MODEL names it instead ("none": no board), for tests."""
    env = os.environ.get("EDGEBUILD_HOST_MODEL")
    if env is not None:
        return None if env.lower() in ("", "none") else env
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n") or None
    except OSError:
        return None


@lru_cache(maxsize=None)
def tensorrt_version() -> str | None:
    """"MAJOR.MINOR" of the installed TensorRT Python package, or None."""
    env = os.environ.get("EDGEBUILD_HOST_TENSORRT")
    if env is not None:
        return None if env.lower() in ("", "none") else env
    from edgebuild.engine import dists

    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_libs"):
        v = dists.version(dist)
        if v is not None:
            return ".".join(v.split(".")[:2])
    return None


def tensorrt_mismatch(target_cc: str | None, target_trt: str | None) -> str | None:
    """Why this host cannot build an engine for a target, or None when it can."""
    need = f"needs sm_{(target_cc or '?').replace('.', '')} with TensorRT {target_trt or '?'}"
    g = gpu()
    if g is None:
        return f"{need}; this host has no CUDA GPU"
    if target_cc and g.compute_capability != target_cc:
        return f"{need}; this host's GPU is {g.name} (sm_{g.compute_capability.replace('.', '')})"
    have = tensorrt_version()
    if have is None:
        return f"{need}; TensorRT is not installed on this host"
    if target_trt and have != target_trt:
        return f"{need}; this host has TensorRT {have}"
    return None


# instruction-set features that decide which kernels ONNX Runtime runs (x86 flags, Arm Features)
KERNEL_ISA = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "fphp", "sve", "sve2", "i8mm", "bf16"})


@lru_cache(maxsize=None)
def cpu_class() -> dict[str, Any]:
    """This host's hardware class as timings see it: the CPU model, its kernel-relevant ISA features and the
    cores this process may use. A measurement's key takes it, so a laptop's latency is never a CI runner's."""
    import platform

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break   # the first processor's block says it all
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name in ("model name", "hardware", "cpu part") and not model:
                    model = value.strip()
                elif name in ("flags", "features"):
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"cpu": os.environ.get("EDGEBUILD_HOST_CPU") or model or platform.processor() or platform.machine(),
            "machine": platform.machine(), "isa": sorted(flags & KERNEL_ISA), "cores": cores}
