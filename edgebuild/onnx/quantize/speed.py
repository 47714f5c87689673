"""When a quantized model counts as faster than FP32: the gain required of a paired timing, and when that
timing has settled the question."""

from __future__ import annotations

from edgebuild.onnx import runtime as onnx_runtime

# "Faster than FP32" must be a measurable gain: at least MIN_GAIN, and more than the uncertainty of the
# measured ratio (its bootstrap interval, capped at MAX_MARGIN), so a model at parity with FP32 is refused every time
# instead of passing or failing by chance. FP32 and the quantized model are timed interleaved, pair by
# pair (edgebuild.onnx.graph.paired_latency), so a busy host slows both sides alike.
MIN_GAIN = 0.03
MAX_MARGIN = 0.2


SETTLE_S = 12.0   # the most a speed check times FP32 and the candidate when the first budget leaves it unclear


def required_gain(noise: float) -> float:
    """The speed-up over FP32 (as a fraction) that counts as faster, given the paired timing's noise."""
    return min(max(MIN_GAIN, noise), MAX_MARGIN)


def decided(pair: onnx_runtime.Paired) -> bool:
    """Whether a paired timing settles "faster than FP32": clearly faster (the bar its noise sets is met),
    clearly not (even the optimistic end of its interval is below the 3 % bar), or measured so precisely that
    its noise is within that bar. Otherwise the speed check times more pairs, up to SETTLE_S."""
    speedup = 1.0 / pair.ratio if pair.ratio > 0 else 0.0
    return (speedup >= 1 + required_gain(pair.noise) or speedup * (1 + pair.noise) < 1 + MIN_GAIN
            or pair.noise <= MIN_GAIN)
