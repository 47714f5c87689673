"""distill: train a smaller PyTorch model (the student) to imitate the upstream one (the teacher).

The student comes from its own factory (`student: file.py:callable`, like the recipe's model) and must
return what the teacher returns (same outputs, same shapes). The loss is Hinton's: the KL divergence
between the teacher's and the student's first outputs softened at `temperature` (scaled by T², so its
gradients keep their size as T changes), weighted by `alpha`, plus cross-entropy against the dataset's
`labels` weighted by 1 - alpha; on a dataset without labels, the soft loss alone. The teacher's outputs
are computed once, before training. The output is a PyTorch model that `export` takes with `from:`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgebuild.pytorch import training
from edgebuild.steps.base import PYTORCH, PlanContext, RunContext, StepError, StepKind, tool_errors


class Distill(StepKind):
    name = "distill"
    version = 1
    summary = "Train a student PyTorch model (its own factory) on the upstream model's softened outputs and the labels."
    params = {
        "student": {"type": "string", "pattern": "^[^:]+:[A-Za-z_][A-Za-z0-9_.]*$",
                    "description": "Factory of the student: \"file.py:callable\" (relative to the recipe) or "
                                   "\"package.module:callable\", returning an untrained nn.Module."},
        **training.schema(epochs=10, batch=64, lr=1e-3),
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 3,
                        "description": "Softmax temperature of the soft targets (higher: more of the teacher's "
                                       "ranking of the wrong classes is passed on)."},
        "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.7,
                  "description": "Weight of the soft-target loss; 1 - alpha weighs cross-entropy on the labels "
                                 "(a dataset without labels trains on the soft loss alone)."},
        "eval": {"type": ["string", "null"], "default": None,
                 "description": "Labelled recipe dataset on which to report the teacher's and student's accuracy and "
                                "their agreement (default: agreement on the training set)."},
        "seed": {"type": "integer", "default": 0, "description": "Seed of the batch order and of every generator."},
    }
    params["data"] = dict(params["data"], description="Recipe dataset to train on: one array per model input; "
                                                      "`labels` add the cross-entropy term.")
    required = ("student", "data")
    takes = (PYTORCH,)
    gives = PYTORCH
    tools = ("torch", "torch-pruning")   # Torch-Pruning counts parameters and MACs
    dataset_params = ("data", "eval")

    @classmethod
    def source_files(cls, params: dict[str, Any], recipe_dir: Path) -> dict[str, Path]:
        """The student's factory file and the local modules it imports: their content shapes the student."""
        from edgebuild.frontend import sources

        ref = str(params.get("student") or "")
        return {sources.source_role("student", f, recipe_dir): f for f in sources.factory_files(ref, recipe_dir)}

    def check(self, ctx: PlanContext) -> None:
        from edgebuild.frontend import sources

        at = ctx.recipe.doc.at(("steps", ctx.step_id, "with", "student"))
        _, problems = sources.check_factory(ctx.params["student"], ctx.recipe.dir, at)
        ctx.problems += [dataclasses.replace(p, message="student: " + p.message) for p in problems]
        if ctx.params.get("eval"):
            why = training.labels_problem(ctx.recipe, ctx.params["eval"])
            if why:
                ctx.error(f"eval: {why}; accuracy needs labels", "eval", "name a dataset with `labels`")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        with training.deterministic(int(ctx.params["seed"])):
            return _distill(ctx)


def _distill(ctx: RunContext) -> dict[str, Any]:
    from edgebuild.pytorch import modules as torch_modules

    p, at = ctx.params, ("steps", ctx.step_id, "with")
    teacher = torch_modules.load(ctx)
    student = torch_modules.from_factory(ctx, p["student"], at + ("student",))
    base = torch_modules.from_factory(ctx, p["student"], at + ("student",))
    ts = training.load_set(ctx, p["data"], at + ("data",))
    ev = training.load_set(ctx, p["eval"], at + ("eval",), True) if p["eval"] else None
    example = training.example(ctx, ts)
    _, factory_at = torch_modules.factory_of(ctx)
    _same_outputs(ctx, teacher, student, example, factory_at)
    with tool_errors("the teacher failed on the training set", recipe_path=factory_at):
        soft = training.predict(teacher, ts)[0]
    sizes = {"teacher": training.size(teacher, example), "student": training.size(student, example)}
    curve = _train(ctx, student, ts, soft)
    torch_modules.save(ctx.out_dir, student, p["student"], at + ("student",), base)
    check = ev or ts
    facts: dict[str, Any] = {
        "params": {k: v["params"] for k, v in sizes.items()}, "macs": {k: v["macs"] for k, v in sizes.items()},
        "loss": curve, "labels": ts.labels is not None,
        "agreement": {"data": check.name, "value": _agreement(teacher, student, check)},
    }
    if ev is not None:
        facts["accuracy"] = {"data": ev.name, "teacher": training.accuracy(teacher, ev),
                             "student": training.accuracy(student, ev)}
    ctx.log.info("student: %d params (teacher %d), agreement %.4f on '%s'", sizes["student"]["params"],
                 sizes["teacher"]["params"], facts["agreement"]["value"], check.name)
    return facts


def _same_outputs(ctx: RunContext, teacher: Any, student: Any, example: tuple[Any, ...], teacher_at: tuple[Any, ...]) -> None:
    """The student returns what the teacher returns: same number of outputs, same shapes."""
    import torch

    from edgebuild.pytorch import modules as torch_modules

    at = ("steps", ctx.step_id, "with", "student")
    with torch.no_grad():
        with tool_errors("the teacher failed on an example batch", recipe_path=teacher_at):
            want = [list(t.shape) for t in torch_modules.flatten(teacher(*example))]
        with tool_errors("the student failed on an example batch", recipe_path=at,
                         hint="the student takes the model's inputs, in the order of `model.inputs`"):
            got = [list(t.shape) for t in torch_modules.flatten(student(*example))]
    if want != got:
        raise StepError(f"the student's outputs {got} do not match the teacher's {want} on a batch of {len(example[0])}",
                        recipe_path=at, hint="the student must return what the teacher returns: the same outputs with "
                                             "the same shapes (e.g. the same number of classes)")


def _train(ctx: RunContext, student: Any, ts: training.TrainingSet, soft: Any) -> list[float]:
    import torch
    import torch.nn.functional as F

    p = ctx.params
    t, alpha = float(p["temperature"]), float(p["alpha"])

    def loss(outs: list[Any], idx: Any, labels: Any) -> Any:
        logits = outs[0]
        target = F.softmax(soft[torch.from_numpy(idx)] / t, dim=-1)
        kd = F.kl_div(F.log_softmax(logits / t, dim=-1), target, reduction="batchmean") * t * t
        if labels is None:
            return kd
        return alpha * kd + (1 - alpha) * F.cross_entropy(logits, labels)

    with tool_errors("training the student failed", recipe_path=("steps", ctx.step_id, "with", "data"),
                     hint="the loss takes the first output's class scores along its last dim, and the dataset's "
                          "`labels` as class ids below the number of classes"):
        return training.fit(student, ts, p, int(p["seed"]), loss, log=ctx.log)


def _agreement(teacher: Any, student: Any, ts: training.TrainingSet) -> float:
    """Share of samples on which the student's first output has the teacher's argmax."""
    a = training.predict(teacher, ts)[0].argmax(dim=-1)
    b = training.predict(student, ts)[0].argmax(dim=-1)
    return round(float((a == b).float().mean()), 5)


KIND = Distill
