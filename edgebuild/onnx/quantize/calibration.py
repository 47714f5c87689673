"""quantize-static's calibration: activation ranges from a recipe dataset, once per method, saved as the
calibration cache file that onnxruntime.quantization.quantize_static reads.

Calibration runs ONNX Runtime's calibrator over the dataset's first samples, fed as batches of one through
CalibrationDataReaders, CHUNK samples per pass (bounded memory). The cache file is also how the histogram
methods get settings quantize_static does not pass on (entropy bins).
"""

from __future__ import annotations

import contextlib
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgebuild.onnx import runtime as onnx_runtime
from edgebuild.onnx.quantize.running import cast_feeds
from edgebuild.steps.base import tool_errors

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# ORT's entropy default (128 bins, 128 quantized bins) has a single candidate threshold: plain min/max.
# 512 bins give the KL search 193 candidates at ~0.2 s per tensor (2048, as TensorRT uses, costs ~1 s).
CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 512, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
}
CHUNK = 16   # samples per calibration pass


@dataclass
class Samples:
    """The calibration dataset as the step checked it: its first `n` of `available` samples are calibrated on."""
    name: str
    path: Path
    inputs: list[str]
    n: int
    available: int


@dataclass
class Calibrations:
    """The activation ranges of one model per calibration method, each calibrated once (the accuracy search
    quantizes with several methods, each several times)."""
    model: Path                        # the pre-processed model, as the quantizer reads it
    folder: Path                       # scratch folder for cache files and augmented models
    samples: Samples
    specs: dict[str, dict[str, Any]]   # the model's graph inputs (onnx_graph.graph_inputs)
    ops: list[str]                     # the op types whose tensors the calibrator collects ranges of
    log: Any
    done: dict[str, tuple[Path, Any]] = field(default_factory=dict)

    def get(self, method_name: str) -> tuple[Path, Any]:
        """(calibration cache file, ranges) for a method, calibrating once per method."""
        if method_name not in self.done:
            self.done[method_name] = self._calibrate(method_name)
        return self.done[method_name]

    def _calibrate(self, method_name: str) -> tuple[Path, Any]:
        from edgebuild.frontend import datasets

        with onnx_runtime.keep_root_logging():
            from onnxruntime.quantization import CalibrationMethod
            from onnxruntime.quantization.calibrate import save_tensors_data

        s = self.samples
        self.log.info("calibrating on %d of %d sample(s) of dataset '%s' with %s", s.n, s.available, s.name, method_name)
        cache = self.folder / f"ranges-{method_name}.json"
        printed = io.StringIO()
        try:
            with tool_errors("ONNX Runtime's calibrator failed"), contextlib.redirect_stdout(printed), \
                    onnx_runtime.quiet_quantizer_logs():   # calibrators print progress
                ranges = calibrate(self.model, self.folder / f"augmented-{method_name}.onnx", self.ops,
                                   getattr(CalibrationMethod, METHODS[method_name]), method_name,
                                   cast_feeds(datasets.feeds(s.path, {k: self.specs.get(k, {}) for k in s.inputs},
                                                             limit=s.n), self.specs))
                save_tensors_data(ranges, cache)
        finally:
            for line in printed.getvalue().splitlines():
                if line.strip():
                    self.log.debug("calibrator: %s", line.strip())
        return cache, ranges


def calibrate(model: Path, augmented: Path, ops: list[str], method: Any, name: str, feeds: Iterator[dict[str, Any]]) -> Any:
    """Activation ranges from the samples, collected CHUNK samples at a time.

    quantize_static would hold every calibrated tensor of every sample in memory at once (the
    histogram methods do); feeding chunks bounds that. Min/max ranges merge exactly across chunks;
    histograms merge by widening with the same bin width, deterministically.
    """
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import create_calibrator

    class Chunk(CalibrationDataReader):
        def __init__(self, items: list[dict[str, Any]]) -> None:
            self._it = iter(items)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    calibrator = create_calibrator(model, ops, augmented_model_path=str(augmented), calibrate_method=method,
                                   extra_options=CALIBRATOR_OPTIONS[name])
    while True:
        chunk = list(itertools.islice(feeds, CHUNK))
        if not chunk:
            break
        calibrator.collect_data(Chunk(chunk))
    return calibrator.compute_data()
