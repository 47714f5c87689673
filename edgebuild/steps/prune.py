"""prune: remove whole channels from a PyTorch model with Torch-Pruning's DepGraph, then fine-tune it.

Why structured: zeroing single weights (`mode: unstructured`) gives a file that compresses better and a
model that is no faster on a dense runtime (ONNX Runtime multiplies the zeros too). Removing whole output
channels shrinks every layer that depends on them — the next convolution's inputs, batch norms, residual
adds, concatenations: DepGraph follows those dependencies — so the exported graph really does less work.
The layers that produce the model's outputs keep their channels (so do the ones named in `ignore:`), and
channel counts stay multiples of `round_to` so SIMD kernels keep their full width.

The output is a PyTorch model (`model.pt` + `module.json`, see edgebuild/pytorch/modules.py) that `export`, or
another pytorch step, takes with `from:`.
"""

from __future__ import annotations

from typing import Any

from edgebuild.errors import Problem
from edgebuild.pytorch import training
from edgebuild.steps.base import PYTORCH, PlanContext, RunContext, StepError, StepKind, tool_errors

TRACE_HINT = ("Torch-Pruning traces forward() with an example batch to find which layers depend on which; "
              "data-dependent control flow or custom autograd functions defeat it: list the layers it cannot follow "
              "under `ignore:`, or prune a simpler part of the model")

SHAPES_HINT = ("forward() uses a channel count Torch-Pruning cannot see (a hard-coded reshape, view or index): compute "
               "it from the tensor (x.flatten(1), x.shape[1]), or list the layer that feeds it under `ignore:`")


class Prune(StepKind):
    name = "prune"
    version = 1
    summary = "Remove whole channels from the PyTorch model (Torch-Pruning DepGraph), then fine-tune it."
    params = {
        "amount": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                   "description": "Fraction of each prunable layer's channels to remove (0 < amount < 1)."},
        "mode": {"enum": ["structured", "unstructured"], "default": "structured",
                 "description": "structured removes whole channels (a faster model); unstructured zeroes single "
                                "weights, which a dense runtime does not run faster (recorded as sparsity only)."},
        "importance": {"enum": ["l1", "l2", "taylor"], "default": "l2",
                       "description": "How channels are ranked: weight magnitude (l1, l2) or |weight x gradient| "
                                      "(taylor, computed on the fine-tuning data)."},
        "ignore": {"type": "array", "items": {"type": "string"}, "default": [],
                   "description": "Module names (as in model.named_modules()) kept whole, besides the layers that "
                                  "produce the outputs, which are always kept."},
        "round_to": {"type": "integer", "minimum": 1, "maximum": 256, "default": 8,
                     "description": "Keep channel counts multiples of this (8 keeps SIMD kernels at full width)."},
        "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 1,
                  "description": "Prune in this many rounds, re-ranking channels (and fine-tuning) after each."},
        "fine_tune": {"type": ["object", "null"], "default": None,
                      "properties": training.schema(epochs=3, batch=32, lr=1e-3), "required": ["data"],
                      "additionalProperties": False,
                      "description": "Train after each pruning round on a labelled dataset (cross-entropy of the "
                                     "first output): {data, epochs (per round), lr, batch, optimizer}."},
        "eval": {"type": ["string", "null"], "default": None,
                 "description": "Labelled recipe dataset on which to report accuracy before and after."},
        "seed": {"type": "integer", "default": 0, "description": "Seed of the batch order and of every generator."},
    }
    required = ("amount",)
    takes = (PYTORCH,)
    gives = PYTORCH
    tools = ("torch", "torch-pruning")
    dataset_params = ("fine_tune.data", "eval")

    @classmethod
    def fill_defaults(cls, given: dict[str, Any]) -> dict[str, Any]:
        out = super().fill_defaults(given)
        if isinstance(out.get("fine_tune"), dict):   # nested defaults enter the key too
            nested = cls.params["fine_tune"]["properties"]
            out["fine_tune"] = dict(sorted({**{k: s["default"] for k, s in nested.items() if "default" in s},
                                            **out["fine_tune"]}.items()))
        return out

    def check(self, ctx: PlanContext) -> None:
        p, doc = ctx.params, ctx.recipe.doc
        ft = p.get("fine_tune")
        if p["importance"] == "taylor" and not ft:
            ctx.error("importance: taylor ranks channels by weight x gradient, which needs training data",
                      "importance", "add `fine_tune: {data: <a dataset with labels>}`, or use `importance: l2`")
        if ft:
            why = training.labels_problem(ctx.recipe, ft["data"])
            if why:
                ctx.problems.append(Problem(f"fine_tune: {why}; fine-tuning trains on labels",
                                            doc.at(("steps", ctx.step_id, "with", "fine_tune", "data")),
                                            "save the dataset with `labels` (one class id per sample)"))
        if p.get("eval"):
            why = training.labels_problem(ctx.recipe, p["eval"])
            if why:
                ctx.error(f"eval: {why}; accuracy needs labels", "eval", "name a dataset with `labels`")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        with training.deterministic(int(ctx.params["seed"])):
            return _prune(ctx)


def _prune(ctx: RunContext) -> dict[str, Any]:
    from edgebuild.pytorch import modules as torch_modules

    p, at = ctx.params, ("steps", ctx.step_id, "with")
    module = torch_modules.load(ctx)
    factory, factory_at = torch_modules.factory_of(ctx)
    base = torch_modules.from_factory(ctx, factory, factory_at)
    ft = training.load_set(ctx, p["fine_tune"]["data"], at + ("fine_tune", "data"), True) if p["fine_tune"] else None
    ev = training.load_set(ctx, p["eval"], at + ("eval",), True) if p["eval"] else None
    example = training.example(ctx, ft or ev)
    with tool_errors("the model failed on an example batch", recipe_path=factory_at):
        before = training.size(module, example)
    kept = _kept_whole(ctx, module, example)
    channels = _channels(module)
    acc_before = training.accuracy(module, ev)
    extra: dict[str, Any] = {}
    if p["mode"] == "structured":
        curve = _structured(ctx, module, example, kept, ft)
    else:
        curve, extra = _unstructured(ctx, module, kept, ft)
    after = training.size(module, example)
    torch_modules.save(ctx.out_dir, module, factory, factory_at, base)
    now = _channels(module)
    facts = {"mode": p["mode"], "params": {"before": before["params"], "after": after["params"]},
             "macs": {"before": before["macs"], "after": after["macs"]},
             "channels": {n: [now[n], c] for n, c in channels.items()}, "kept_whole": kept,
             "fine_tune_loss": curve, **extra}
    if ev is not None:
        facts["accuracy"] = {"data": ev.name, "before": acc_before, "after": training.accuracy(module, ev)}
    ctx.log.info("params %d -> %d, MACs %d -> %d", before["params"], after["params"], before["macs"], after["macs"])
    return facts


LAYERS = ("Conv1d", "Conv2d", "Conv3d", "Linear")   # the layers whose output channels are counted and kept


def _layers(module: Any) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in module.named_modules() if type(m).__name__ in LAYERS]


def _channels(module: Any) -> dict[str, int]:
    """Output channels (features) of every convolution and linear layer, by module name."""
    return {n: int(getattr(m, "out_channels", None) or m.out_features) for n, m in _layers(module)}


def _kept_whole(ctx: RunContext, module: Any, example: tuple[Any, ...]) -> list[str]:
    """The layers pruning leaves whole: those producing the model's outputs, and the ones `ignore:` names."""
    from edgebuild.frontend.validate import did_you_mean

    names = dict(module.named_modules())
    for i, name in enumerate(ctx.params["ignore"]):
        if name not in names or not name:
            listed = ", ".join(n for n, _ in _layers(module))
            raise StepError(f"ignore: '{name}' is not a module of the model",
                            hint=did_you_mean(name, [n for n in names if n]) or f"its layers: {listed}",
                            recipe_path=("steps", ctx.step_id, "with", "ignore", i))
    return sorted(set(_output_layers(module, example)) | set(ctx.params["ignore"]))


def _output_layers(module: Any, example: tuple[Any, ...]) -> list[str]:
    """The convolution/linear layers whose output is a model output (the classifier); else the last such layer."""
    import torch

    from edgebuild.pytorch import modules as torch_modules

    seen: list[tuple[Any, str]] = []   # outputs kept alive, so identity comparisons are sound
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.append((out, n))) for n, m in _layers(module)]
    try:
        with torch.no_grad():
            outs = torch_modules.flatten(module(*example))
    finally:
        for h in hooks:
            h.remove()
    found = [n for o in outs for t, n in seen if t is o]
    return found or [n for n, _ in _layers(module)][-1:]


def _structured(ctx: RunContext, module: Any, example: tuple[Any, ...], kept: list[str],
                ft: training.TrainingSet | None) -> list[float]:
    import torch
    import torch_pruning as tp

    p = ctx.params
    importance = {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
                  "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
                  "taylor": lambda: tp.importance.GroupTaylorImportance()}[p["importance"]]()
    names = dict(module.named_modules())
    module.eval()
    with tool_errors("Torch-Pruning could not trace the model", hint=TRACE_HINT, recipe_path=("steps", ctx.step_id)):
        pruner = tp.pruner.BasePruner(module, example, importance=importance, pruning_ratio=float(p["amount"]),
                                      iterative_steps=int(p["steps"]), ignored_layers=[names[n] for n in kept],
                                      round_to=int(p["round_to"]))
    curve: list[float] = []
    for i in range(int(p["steps"])):
        if p["importance"] == "taylor":
            _gradients(module, ft, int(p["seed"]), i)
        with tool_errors("Torch-Pruning could not prune the model", hint=TRACE_HINT, recipe_path=("steps", ctx.step_id)):
            pruner.step()
        with tool_errors("the pruned model no longer runs", hint=SHAPES_HINT, recipe_path=("steps", ctx.step_id)), \
                torch.no_grad():
            module(*example)
        module.zero_grad(set_to_none=True)
        ctx.log.info("round %d/%d: %s", i + 1, int(p["steps"]), ", ".join(f"{n} {c}" for n, c in _channels(module).items()))
        if ft is not None:
            curve += _fine_tune(ctx, module, ft, i)
    return curve


def _unstructured(ctx: RunContext, module: Any, kept: list[str],
                  ft: training.TrainingSet | None) -> tuple[list[float], dict[str, Any]]:
    """Zero the lowest-ranked single weights of every layer not kept whole; fine-tuning keeps them zero."""
    import torch

    p = ctx.params
    layers = [m for n, m in _layers(module) if n not in kept]
    masks: list[Any] = []
    curve: list[float] = []

    def apply() -> None:
        with torch.no_grad():
            for m, mask in zip(layers, masks):
                m.weight.mul_(mask)

    for i in range(int(p["steps"])):
        if p["importance"] == "taylor":
            _gradients(module, ft, int(p["seed"]), i)
        share = float(p["amount"]) * (i + 1) / int(p["steps"])
        masks = [_mask(m.weight, share, p["importance"] == "taylor") for m in layers]
        apply()
        module.zero_grad(set_to_none=True)
        if ft is not None:
            curve += _fine_tune(ctx, module, ft, i, after_step=apply)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    total = sum(m.weight.numel() for m in layers)
    ctx.log.warning("unstructured pruning zeroed %.1f%% of the weights; a dense runtime (ONNX Runtime) multiplies "
                    "zeros like any number, so the model will not run faster: use `mode: structured` for speed",
                    100 * zeros / max(total, 1))
    return curve, {"sparsity": round(zeros / max(total, 1), 5),
                   "warning": "unstructured sparsity: not faster on a dense runtime"}


def _mask(weight: Any, share: float, taylor: bool) -> Any:
    """1 for the weights kept, 0 for the `share` of them ranked lowest (|w|, or |w x grad| for taylor)."""
    import torch

    score = (weight * weight.grad).abs() if taylor and weight.grad is not None else weight.abs()
    flat = score.detach().flatten()
    mask = torch.ones_like(flat)
    mask[torch.argsort(flat, stable=True)[:int(share * flat.numel())]] = 0
    return mask.view_as(weight)


def _gradients(module: Any, ft: training.TrainingSet | None, seed: int, round_: int, batches: int = 4) -> None:
    """Accumulate the cross-entropy gradients of a few training batches (Taylor importance reads them)."""
    import torch

    assert ft is not None   # check() requires fine_tune data for taylor
    module.eval()   # batch norms keep their statistics
    module.zero_grad(set_to_none=True)
    for n, (_, xs, labels) in enumerate(training.batches(ft, 64, seed, 1000 + round_)):
        if n == batches:
            break
        assert labels is not None   # check() requires labelled fine_tune data for taylor
        with tool_errors("computing Taylor importance failed", hint=FT_HINT):
            torch.nn.functional.cross_entropy(_first(module(*xs)), labels).backward()


FT_HINT = ("fine-tuning takes the cross-entropy of the model's first output (class scores along dim 1) "
           "against the dataset's `labels` (class ids below the number of classes)")


def _first(out: Any) -> Any:
    from edgebuild.pytorch import modules as torch_modules

    return torch_modules.flatten(out)[0]


def _fine_tune(ctx: RunContext, module: Any, ft: training.TrainingSet, round_: int,
               after_step: Any = None) -> list[float]:
    import torch

    def loss(outs: list[Any], _idx: Any, labels: Any) -> Any:
        return torch.nn.functional.cross_entropy(outs[0], labels)

    with tool_errors("fine-tuning failed", hint=FT_HINT, recipe_path=("steps", ctx.step_id, "with", "fine_tune")):
        return training.fit(module, ft, ctx.params["fine_tune"], int(ctx.params["seed"]) + 7919 * round_, loss,
                             after_step=after_step, log=ctx.log)


KIND = Prune
