"""What a step kind is: its name, version, parameter schema, input/output kinds, tools, and run()."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from edgebuild.errors import Problem

# Model kinds that flow along `from` edges.
PYTORCH = "pytorch"          # the recipe's model.pytorch source (only the recipe model is this kind)
ONNX = "onnx"                # a single `model.onnx` file in the step's output folder
TENSORRT = "tensorrt-engine" # `model.engine` plus `engine.json`
WEB = "web-bundle"           # a folder a static web server can serve


class StepError(Exception):
    """The step's own work failed for a reason the user can act on (bad tolerance, mismatch...).

    `recipe_path` names the recipe key the failure is about, e.g. ("model", "pytorch", "weights")
    or ("steps", "fp32", "with", "opset"); the executor turns it into file:line:col.
    """

    def __init__(self, message: str, hint: str | None = None, recipe_path: tuple[Any, ...] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.recipe_path = recipe_path


def raised_by_edgebuild(exc: BaseException) -> bool:
    """Whether `exc` was raised in edgebuild's own code (its innermost frame is in this package): a bug,
    unlike an exception a tool library (onnx, onnxruntime, torch) raises on the user's model."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    package = Path(__file__).resolve().parents[1]
    return Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(package)


@contextlib.contextmanager
def tool_errors(what: str, hint: str | None = None, recipe_path: tuple[Any, ...] | None = None) -> Iterator[None]:
    """Run a tool library on the user's model: its exceptions become a StepError ("WHAT: Type: message"),
    with the traceback kept in the step's log; an exception from edgebuild's own code passes through."""
    try:
        yield
    except StepError:
        raise
    except Exception as exc:
        if raised_by_edgebuild(exc):
            raise
        import traceback

        logging.getLogger("edgebuild.step").info("%s failed:\n%s", what, "".join(traceback.format_exception(exc)).rstrip())
        text = " ".join(str(exc).split())
        raise StepError(f"{what}: {type(exc).__name__}: {text[:400]}", hint=hint, recipe_path=recipe_path) from None


@dataclass
class PlanContext:
    """What a step kind may inspect at plan time (no heavy imports here)."""

    step_id: str
    params: dict[str, Any]
    recipe: Any                      # edgebuild.frontend.recipe.Recipe
    input_kind: str | None
    targets: list[Any]               # edgebuild.frontend.targets.Target objects that will use this node
    problems: list[Problem] = field(default_factory=list)

    def error(self, message: str, param: str | None = None, hint: str | None = None) -> None:
        path: tuple[Any, ...] = ("steps", self.step_id) + (("with", param) if param else ())
        self.problems.append(Problem(message, self.recipe.doc.at(path, key=param is None), hint))


@dataclass
class RunContext:
    """Everything a step's run() gets; it runs in a worker process with its output captured."""

    step_id: str
    params: dict[str, Any]
    input_dir: Path | None           # the upstream step's output folder (None for the recipe's model)
    source: dict[str, Any]           # the recipe's model: {"onnx": path} or {"pytorch": {"factory", "weights"}}
    inputs: dict[str, dict[str, Any]]  # input name -> {"shape": [...], "dtype": "float32"} (may be empty for onnx)
    data: dict[str, Path]            # dataset name -> .npz path
    out_dir: Path                    # write outputs here (a scratch folder, renamed into the cache on success)
    ir_version: int                  # the highest ONNX IR version every consumer's runtime accepts
    max_opset: int                   # the highest default-domain opset every consumer's runtime accepts
    target: dict[str, Any] | None    # the target profile, for target-specific steps only
    recipe_dir: Path
    log: logging.Logger
    refs: dict[str, Path] = field(default_factory=dict)  # extra inputs by role (e.g. "reference": an output folder)
    cache_dir: Path | None = None    # <cache>/shared: files steps keep across builds on this machine (downloads)
    # the state a kind carries across builds (StepKind.state_name): the folders of its latest versions, this
    # cache's and the remote's (to read, and merge where they differ), and the folder to write the new one to
    state_in: list[Path] = field(default_factory=list)
    state_out: Path | None = None

    @property
    def input_model(self) -> Path:
        """The ONNX model this step takes: upstream output, or the recipe's onnx source."""
        if self.input_dir is not None:
            return self.input_dir / "model.onnx"
        return Path(self.source["onnx"])

    @property
    def output_model(self) -> Path:
        return self.out_dir / "model.onnx"


class StepKind:
    """Base class of every step kind; subclasses live one per file in edgebuild/steps/.

    A step kind declares everything the planner needs as class attributes, so planning never
    imports a heavy library; `run()` does its heavy imports inside.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, dict[str, Any]]] = {}   # JSON Schema per parameter; each has "description" and, if optional, "default"
    required: ClassVar[tuple[str, ...]] = ()
    takes: ClassVar[tuple[str, ...]] = (ONNX,)        # input kinds this step accepts
    gives: ClassVar[str] = ONNX
    precision: ClassVar[str | None] = None            # precision of the output when fixed by the kind ("int8", "fp16"...)
    # precisions of the input model this step can convert (None: any); a quantizer or the float16 converter
    # rewrites float32 weights, and fails, late and obscurely, on a model that is already int8 or float16
    takes_precisions: ClassVar[tuple[str, ...] | None] = None
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")  # distributions whose versions enter the cache key
    target_specific: ClassVar[bool] = False
    dataset_params: ClassVar[tuple[str, ...]] = ()    # params naming a dataset of the recipe's `data:` ("a" or "a.b")
    exclusive: ClassVar[bool] = False                 # runs alone (nothing else in parallel): timing measurements
    reproducible: ClassVar[bool] = True               # same inputs give the same bytes (TensorRT engines do not)
    # its output is a fact about the host that ran it (timings): the host's hardware class enters its key, so a
    # shared cache never hands one machine's measurements to another kind of machine
    host_specific: ClassVar[bool] = False
    # non-Python files that shape its output (templates, data), relative to the edgebuild package; they enter
    # the key with its module and every edgebuild module that module imports (found by edgebuild.engine.codedeps)
    code_files: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The JSON Schema of this kind's `with:` block (unknown keys are errors)."""
        return {"type": "object", "properties": cls.params, "required": list(cls.required),
                "additionalProperties": False}

    @classmethod
    def fill_defaults(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Parameters with defaults filled in, as they enter the cache key: an integer parameter written
        `17.0` (which JSON Schema takes as an integer) is 17, so it does not make a key of its own."""
        out = {k: spec["default"] for k, spec in cls.params.items() if "default" in spec}
        for k, v in given.items():
            types = (cls.params.get(k) or {}).get("type")
            integer = types == "integer" or (isinstance(types, list) and "integer" in types and "number" not in types)
            out[k] = int(v) if integer and isinstance(v, float) and v.is_integer() else v
        return dict(sorted(out.items()))

    @classmethod
    def datasets(cls, params: dict[str, Any]) -> dict[tuple[str, ...], str]:
        """Datasets these parameters name: parameter path (e.g. ("accuracy", "data")) -> dataset name."""
        out = {}
        for dotted in cls.dataset_params:
            value: Any = params
            for part in dotted.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str):
                out[tuple(dotted.split("."))] = value
        return out

    @classmethod
    def is_target_specific(cls, params: dict[str, Any]) -> bool:
        """Whether this step, with these parameters, builds differently per target (one node per target)."""
        return cls.target_specific

    @classmethod
    def resolve(cls, params: dict[str, Any], target: dict[str, Any]) -> dict[str, Any] | None:
        """The concrete values of what this step takes from `target` (a profile's data), e.g. quantization
        types for `auto`, which enter the cache key instead of the whole profile: targets that resolve alike
        share one build. None (the default): the whole profile enters the key."""
        return None

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        """Files named in the parameters whose content changes the output (e.g. a user metric's .py):
        role -> path; their digests enter the cache key."""
        return {}

    @classmethod
    def emits(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """Operators this step puts into its output ("Op", or "domain.Op"; "domain.*" for a whole domain),
        which the runtime-compatibility check compares with what each target's runtime can load."""
        return ()

    @classmethod
    def output_precision(cls, params: dict[str, Any], input_precision: str) -> str:
        """The precision of what this step writes, given its parameters and its input's."""
        return cls.precision or input_precision

    @classmethod
    def state_name(cls, target: dict[str, Any] | None) -> str | None:
        """The name of a state this kind reads and improves build after build (TensorRT's timing cache of one
        GPU and TensorRT version), or None. The state is not an input of the step's key: it changes how fast
        the step runs, not what a correct output is. It is kept as a cache entry under a ref of that name,
        and travels through a remote cache like any entry."""
        return None

    def check(self, ctx: PlanContext) -> None:
        """Plan-time checks beyond the schema (cheap: no heavy imports, no model loading)."""

    def deferral(self, target: Any) -> str | None:
        """Why this host cannot run the step for `target` (the node is then deferred), or None when it can."""
        return None

    @classmethod
    def resources(cls, params: dict[str, Any], target: Any) -> dict[str, float]:
        """What a host must offer to run the step for `target`, as Dask resources (`cuda-sm87`, `tensorrt-10.3`,
        `device-<profile>`): on a cluster (`run --executor dask://...`) the node runs only on a worker that
        advertises them all (`edgebuild worker`), and is deferred when none is connected. Empty: any worker.
        Keep it in step with deferral(), which answers the same question for this host."""
        return {}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Do the work; write outputs under ctx.out_dir; return deterministic facts for the manifest."""
        raise NotImplementedError
