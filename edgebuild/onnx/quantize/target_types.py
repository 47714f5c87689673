"""The integer types and thread count a quantize step takes from its target's CPU: every `auto` resolved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass
class Types:
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    reason: str

    def facts(self) -> dict[str, Any]:
        return {"activation_type": self.activation_type, "weight_type": self.weight_type,
                "per_channel": self.per_channel, "reduce_range": self.reduce_range, "reason": self.reason}


def auto_types(target: dict[str, Any] | None) -> Types:
    """The integer types ONNX Runtime's CPU kernels (MLAS) run fastest on this target's CPU.

    - x86-64: U8S8 (uint8 activations, int8 weights). MLAS's x86 int8 GEMM and symmetric-conv
      kernels are U8S8 (VPMADDUBSW on AVX2/AVX-512, VPDPBUSD with VNNI); S8S8 has no fast x86
      kernel short of AVX-VNNI-INT8 and falls back to portable code, which is why int8 activations
      ran slower than FP32 on most conv models. Without VNNI, VPMADDUBSW adds pairs of u8*s8
      products in 16 bits and can saturate: ONNX Runtime's guidance is 7-bit weights
      (reduce_range) there, per-channel or not. With VNNI there is no saturation.
    - aarch64: S8S8. MLAS has native signed kernels on Arm64 (SDOT with dotprod, SMMLA with i8mm,
      widening NEON multiplies without either), its symmetric int8 conv kernels take int8 weights,
      and ONNX Runtime keeps int8 QDQ activations native only on Arm; Arm has no saturation issue.
    - armv7l: U8S8: 32-bit Arm's NEON int8 GEMM takes unsigned activations (U8X8).
    - wasm32: U8S8: onnxruntime-web's int8 GEMM kernels (WebAssembly SIMD and relaxed SIMD) are U8X8.
      The SIMD128 kernel widens to 16 bits before multiplying (no saturation); relaxed SIMD's int8
      dot product takes one 7-bit operand, so with `relaxed-simd` weights are 7-bit (reduce_range).
    - No target (a step that is not per target): U8S8, ONNX Runtime's x86-64 default.
    Per-channel weights everywhere: every one of these kernels takes per-channel weight scales at no
    run-time cost, and they keep convolutions with uneven filters accurate.
    """
    if not target:
        return Types("uint8", "int8", True, False, "no target profile: U8S8, ONNX Runtime's default kernels")
    cpu = target.get("cpu") or {}
    arch = cpu.get("arch", "")
    feats = set(cpu.get("features") or [])
    # the reasons name the CPU class, not the target: targets that resolve alike share one build (and its facts)
    if arch == "x86_64":
        if feats & {"vnni", "avx512-vnni", "amx"}:
            return Types("uint8", "int8", True, False, "x86-64 with VNNI: U8S8 runs on VPDPBUSD")
        if feats & {"avx2", "avx512"}:
            return Types("uint8", "int8", True, True,
                         "x86-64 with AVX2/AVX-512 but no VNNI: U8S8 on VPMADDUBSW, 7-bit weights against its 16-bit saturation")
        return Types("uint8", "int8", True, False, "x86-64 without AVX2: U8S8")
    if arch == "aarch64":
        how = "SMMLA (i8mm)" if "i8mm" in feats else "SDOT (dotprod)" if "dotprod" in feats else "widening NEON"
        return Types("int8", "int8", True, False, f"Arm64: S8S8 on {how}")
    if arch == "armv7l":
        return Types("uint8", "int8", True, False, "32-bit Arm: U8S8 (NEON U8X8 kernels)")
    if arch == "wasm32":
        if "relaxed-simd" in feats:   # relaxed SIMD's int8 dot product takes a 7-bit operand: 7-bit weights are safe
            return Types("uint8", "int8", True, True, "WebAssembly relaxed SIMD: U8S8, 7-bit weights")
        return Types("uint8", "int8", True, False, "WebAssembly: U8S8 (U8X8 SIMD kernels)")
    return Types("uint8", "int8", True, False, f"{arch or 'unknown CPU'}: U8S8")


def resolve_types(params: dict[str, Any], target: dict[str, Any] | None, dynamic: bool = False) -> Types:
    """The step's types with every `auto` replaced by `auto_types(target)`'s choice."""
    auto = auto_types(target)
    act = "uint8" if dynamic else (auto.activation_type if params.get("activation_type") == "auto" else params["activation_type"])
    wt = auto.weight_type if params.get("weight_type") == "auto" else params["weight_type"]
    pc = auto.per_channel if params.get("per_channel") == "auto" else bool(params.get("per_channel"))
    if dynamic:
        rr_param = params.get("reduce_range", False)
        rr = auto.reduce_range if rr_param == "auto" else bool(rr_param)
    else:   # quantize-static has no reduce_range parameter: it follows the automatic types
        rr = auto.reduce_range and (params.get("activation_type") == "auto" or params.get("weight_type") == "auto")
        if act == "int8" and wt == "int8":
            rr = False   # reduce_range is for the U8S8 kernels' saturation
    reason = auto.reason if uses_auto(params, ("activation_type", "weight_type", "per_channel", "reduce_range")) else "as given"
    return Types(act, wt, pc, rr, reason)


def resolved(params: dict[str, Any], target: dict[str, Any], dynamic: bool = False) -> dict[str, Any]:
    """What a quantize step takes from its target, as concrete values (its cache key's target part): the
    types `auto` picks and, with an accuracy goal, the thread count its speed check runs with."""
    t = resolve_types(params, target, dynamic)
    out: dict[str, Any] = {"activation_type": t.activation_type, "weight_type": t.weight_type,
                           "per_channel": t.per_channel, "reduce_range": t.reduce_range}
    if params.get("accuracy"):
        out["threads"] = threads_for(target)
    return out


def uses_auto(params: dict[str, Any], keys: Iterable[str]) -> bool:
    return any(params.get(k) == "auto" for k in keys)


def threads_for(target: dict[str, Any] | None) -> int:
    """The target's inference threads, capped at this host's CPUs (1 without a target)."""
    want = int(((target or {}).get("cpu") or {}).get("threads") or 1)
    return max(1, min(want, os.cpu_count() or 1))
