"""Training inside steps (prune's fine-tuning, distill): datasets as tensors, batches in a seeded order,
the deterministic CPU setting they run in, accuracy and size counts.

Same key, same bytes: training runs on the CPU with a fixed thread count, deterministic algorithms and
seeded generators, and a batch order drawn from (seed, epoch) alone, so a rebuild writes the same
state_dict on the same kind of machine (float sums over another thread count or another CPU's kernels can
differ in the last bits, which is why the thread count is fixed rather than the host's).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from edgebuild.steps.base import RunContext, StepError

# Fixed, not the host's core count, so the bytes do not depend on the machine's size; and one, because steps
# train side by side (--jobs) on small shared hosts, where two threads per step ran 2-8x slower than one.
THREADS = 1
OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainingSet:
    """A recipe dataset loaded whole: one array per model input (in input order) and the labels, if any."""

    name: str
    inputs: list[Any]          # numpy arrays, samples along the first axis
    labels: Any | None         # int64 numpy array [N], or None

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs else 0


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded generators, deterministic algorithms and THREADS threads meanwhile; the previous settings after."""
    import random

    import numpy as np
    import torch

    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


def load_set(ctx: RunContext, name: str, at: tuple[Any, ...], need_labels: bool = False) -> TrainingSet:
    """The recipe dataset `name`, with an array for each model input cast to its dtype; `at` is the
    recipe key naming it (a located error when it does not fit)."""
    import numpy as np

    from edgebuild.frontend import datasets

    if name not in ctx.data:
        raise StepError(f"dataset '{name}' is not declared under `data:`", recipe_path=at)
    with np.load(ctx.data[name], allow_pickle=False) as z:
        missing = [k for k in ctx.inputs if k not in z.files]
        if missing:
            raise StepError(f"dataset '{name}' has no array for model input(s) {', '.join(missing)} "
                            f"(it has: {', '.join(sorted(z.files))})", recipe_path=at,
                            hint="a training set holds one array per model input, named after it, plus `labels`")
        arrays = [z[k].astype(ctx.inputs[k].get("dtype", "float32"), copy=False) for k in ctx.inputs]
        labels = z[datasets.LABELS].astype("int64") if datasets.LABELS in z.files else None
    for k, a in zip(ctx.inputs, arrays):
        shape = ctx.inputs[k]["shape"]
        if a.ndim != len(shape) or (shape and not isinstance(shape[0], str) and a.ndim == len(shape) + 1):
            raise StepError(f"dataset '{name}': array '{k}' has shape {list(a.shape)}, but training draws batches "
                            f"along the first axis of an input declared {shape}", recipe_path=at,
                            hint="declare the model input with a symbolic batch dim, e.g. [batch, ...], "
                                 "and save the samples stacked along it")
    if need_labels and labels is None:
        raise StepError(f"dataset '{name}' has no 'labels' array", recipe_path=at,
                        hint="save the dataset with `labels` (one class id per sample)")
    return TrainingSet(name, arrays, labels)


def batches(ts: TrainingSet, size: int, seed: int, epoch: int) -> Iterator[tuple[Any, tuple[Any, ...], Any | None]]:
    """One epoch of (sample indices, input tensors, label tensor or None) in an order drawn from (seed, epoch) alone."""
    import numpy as np
    import torch

    order = np.random.default_rng([seed, epoch]).permutation(len(ts))
    for i in range(0, len(order), size):
        idx = order[i:i + size]
        xs = tuple(torch.from_numpy(np.ascontiguousarray(a[idx])) for a in ts.inputs)
        yield idx, xs, (torch.from_numpy(ts.labels[idx]) if ts.labels is not None else None)


def make_optimizer(name: str, params: Any, lr: float) -> Any:
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(params, lr=lr)


def fit(module: Any, ts: TrainingSet, cfg: dict[str, Any], seed: int, loss_of: Callable[..., Any],
        after_step: Callable[[], None] | None = None, log: Any = None) -> list[float]:
    """Train `module` for cfg["epochs"] epochs of cfg["batch"]-sample batches; `loss_of(outputs, idx, labels)`
    gives the loss of one batch (`idx`: its sample indices). Returns each epoch's mean loss (the curve the manifest shows)."""
    from edgebuild.pytorch import modules as torch_modules

    opt = make_optimizer(cfg.get("optimizer", "adam"), [p for p in module.parameters() if p.requires_grad], float(cfg["lr"]))
    curve = []
    for epoch in range(int(cfg["epochs"])):
        module.train()
        total, seen = 0.0, 0
        for idx, xs, labels in batches(ts, int(cfg["batch"]), seed, epoch):
            opt.zero_grad(set_to_none=True)
            loss = loss_of(torch_modules.flatten(module(*xs)), idx, labels)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(xs[0])
            seen += len(xs[0])
        curve.append(round(total / max(seen, 1), 5))
        if log is not None:
            log.info("epoch %d/%d: mean loss %.5f", epoch + 1, int(cfg["epochs"]), curve[-1])
    module.eval()
    return curve


def predict(module: Any, ts: TrainingSet, size: int = 256) -> list[Any]:
    """The model's outputs on every sample of `ts`, in order, one concatenated tensor per output."""
    import torch

    from edgebuild.pytorch import modules as torch_modules

    module.eval()
    parts: list[list[Any]] = []
    with torch.no_grad():
        for i in range(0, len(ts), size):
            xs = tuple(torch.from_numpy(a[i:i + size]) for a in ts.inputs)
            outs = torch_modules.flatten(module(*xs))
            parts = parts or [[] for _ in outs]
            for acc, o in zip(parts, outs):
                acc.append(o)
    return [torch.cat(p) for p in parts]


def accuracy(module: Any, ts: TrainingSet | None) -> float | None:
    """Top-1 accuracy of the first output's argmax over its last dim against the labels (None without them)."""
    if ts is None or ts.labels is None:
        return None
    import numpy as np

    pred = predict(module, ts)[0].argmax(dim=-1).numpy()
    return round(float(np.mean(pred == ts.labels)), 5)


def example(ctx: RunContext, ts: TrainingSet | None) -> tuple[Any, ...]:
    """One input batch for tracing and counting: two samples of `ts`, or seeded random ones."""
    import torch

    if ts is not None and len(ts) >= 2:
        return tuple(torch.from_numpy(a[:2].copy()) for a in ts.inputs)
    gen = torch.Generator().manual_seed(0)
    out = []
    for spec in ctx.inputs.values():
        shape = [d if isinstance(d, int) else 2 for d in spec["shape"]]
        dtype = getattr(torch, spec.get("dtype", "float32"))
        out.append(torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point
                   else torch.randint(0, 10, shape, generator=gen).to(dtype))
    return tuple(out)


def size(module: Any, example_inputs: tuple[Any, ...]) -> dict[str, int]:
    """Parameters and multiply-accumulates per sample of one forward pass (Torch-Pruning's counter)."""
    import torch_pruning as tp

    one = tuple(x[:1] for x in example_inputs)
    macs, params = tp.utils.count_ops_and_params(module, one)
    return {"params": int(params), "macs": int(macs)}


def schema(epochs: int, batch: int, lr: float) -> dict[str, dict[str, Any]]:
    """The training parameters (data, epochs, lr, batch, optimizer) with these defaults, each described."""
    return {
        "data": {"type": "string", "description": "Recipe dataset to train on (a `data:` set with one array per model input, "
                                                   "and `labels`)."},
        "epochs": {"type": "integer", "minimum": 0, "maximum": 10000, "default": epochs,
                   "description": "Passes over the training set."},
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": lr, "description": "Learning rate."},
        "batch": {"type": "integer", "minimum": 1, "default": batch,
                  "description": "Samples per training batch, drawn in an order seeded by `seed` and the epoch."},
        "optimizer": {"enum": list(OPTIMIZERS), "default": "adam", "description": "adam, adamw, or sgd (momentum 0.9)."},
    }


def labels_problem(recipe: Any, name: str) -> str | None:
    """Why recipe dataset `name` cannot serve where labels are needed (plan time, headers only), or None."""
    from edgebuild.frontend import datasets

    path = recipe.data.get(name)
    try:
        arrays = datasets.inspect(path) if path is not None else {}
    except (FileNotFoundError, ValueError):
        return None   # the recipe's own dataset checks report it
    return None if datasets.LABELS in arrays else f"dataset '{name}' has no 'labels' array"
