"""Layer-wise learning-rate decay (LLRD) as a pure function from a model to optimizer groups.

Encoder block k of L gets ``lr * decay**(L - k)`` (the top block trains at ``lr``), the embeddings
``lr * decay**L``, and everything above the encoder (projection, adapter, heads) ``head_lr``. One
group per (depth, weight decay or not); 1-D parameters (biases, LayerNorm weights) get no weight
decay. Each group's final rate is in its ``lr``: HF schedulers scale every group's ``initial_lr``
by the same factor, so the ratios between groups hold for the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

logger = logging.getLogger(__name__)


def layer_depth_fn(model: nn.Module) -> tuple[Callable[[str], int], int]:
    """The model's own depth map: `(parameter name -> depth, number of encoder layers)`."""
    if not hasattr(model, "get_layer_depth"):
        raise TypeError(
            f"{type(model).__name__} does not declare `get_layer_depth`; layer-wise groups need it"
        )
    return model.get_layer_depth, model.config.encoder.num_hidden_layers


def group_name(depth: int, num_layers: int) -> str:
    if depth == 0:
        return "embeddings"
    if depth > num_layers:
        return "heads"
    return f"layer_{depth - 1}"


def layerwise_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    layerwise_lr_decay: float = 1.0,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.0,
    parameters: Iterable[tuple[str, nn.Parameter]] | None = None,
) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning rates.

    Args:
        model: a model with `get_layer_depth(name)` and `config.encoder.num_hidden_layers`.
        learning_rate: the rate of the top encoder block.
        layerwise_lr_decay: the factor ξ in (0, 1]; 1.0 gives every encoder parameter `learning_rate`.
        head_learning_rate: rate for the projection, adapter and heads (default `learning_rate`).
        weight_decay: applied to matrices only.
        parameters: `(name, parameter)` pairs to put in groups (default: every parameter that
            requires a gradient). Lets the trainer include layers that a schedule will unfreeze later.

    Returns:
        A list of dicts for `torch.optim.*`, each with `params`, `lr`, `weight_decay`, `name` and
        `depth`, ordered from the embeddings to the heads.
    """
    if not 0.0 < layerwise_lr_decay <= 1.0:
        raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {layerwise_lr_decay}")
    if learning_rate < 0:
        raise ValueError(f"learning_rate must be >= 0, got {learning_rate}")
    depth_of, num_layers = layer_depth_fn(model)
    head_lr = learning_rate if head_learning_rate is None else head_learning_rate
    if parameters is None:
        parameters = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    groups: dict[tuple[int, bool], dict] = {}
    for name, param in parameters:
        depth = depth_of(name)
        decays = param.ndim > 1
        key = (depth, decays)
        if key not in groups:
            lr = head_lr if depth > num_layers else learning_rate * layerwise_lr_decay ** (num_layers - depth)
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": lr,
                "weight_decay": weight_decay if decays else 0.0,
                "name": f"{group_name(depth, num_layers)}{'' if decays else '.no_decay'}",
                "depth": depth,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    ordered = [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]
    for group in ordered:
        logger.info(
            "param group %-22s lr=%.3g weight_decay=%g tensors=%d params=%d",
            group["name"],
            group["lr"],
            group["weight_decay"],
            len(group["params"]),
            sum(p.numel() for p in group["params"]),
        )
    return ordered


def group_learning_rates(optimizer, name_unnamed: bool = False) -> dict[str, float]:
    """`{group name: current lr}`, one entry per depth (`layer_3` and `layer_3.no_decay` share their rate). Groups
    without a name are left out, or with `name_unnamed` named `group_<index>`."""
    rates: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        name = group.get("name") or (f"group_{index}" if name_unnamed else None)
        if name:
            rates.setdefault(name.removesuffix(".no_decay"), group["lr"])
    return rates


def layerwise_optimizer(model, args, never_trained, optimizer_cls, optimizer_kwargs: dict):
    """`optimizer_cls` (what `args.optim` names, as `Trainer.get_optimizer_cls_and_kwargs` gives it) over the
    layer-wise groups of every parameter of `model` not in `never_trained`. Layers that gradual unfreezing
    releases later are in it from the start: their gradients stay None until then, and torch optimizers skip
    such parameters."""
    if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
        raise ValueError(
            f"optim={args.optim!r} builds its own parameter groups, which would drop the layer-wise "
            "learning rates; choose a standard optimizer (e.g. adamw_torch, adamw_torch_fused, sgd, adafactor)."
        )
    groups = layerwise_parameter_groups(
        model,
        learning_rate=args.learning_rate,
        layerwise_lr_decay=args.layerwise_lr_decay,
        head_learning_rate=args.head_learning_rate,
        weight_decay=args.weight_decay,
        parameters=[(name, param) for name, param in model.named_parameters() if name not in never_trained],
    )
    return optimizer_cls(groups, **optimizer_kwargs)


def complete_optimizer_state(optimizer) -> list[torch.nn.Parameter]:
    """Give every trainable parameter that has no optimizer state yet the state its first step would create, and
    return those parameters.

    torch's distributed state-dict API (what FSDP checkpoints save and load through) refuses to load a checkpoint
    that lacks the state of a trainable parameter. A parameter that has had no gradient yet has none: a layer
    waiting for gradual unfreezing, a head whose task has not been drawn. So before an FSDP checkpoint is written,
    such parameters get their state as torch does it for a fresh optimizer (one step on zero gradients with the
    learning rate at zero), with the step count put back to zero: for Adam(W) that is exactly the lazy state the
    first real step would build (zero moments, step 0), so training goes on as it would have."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps torch's
    missing = [
        param
        for group in optimizer.param_groups
        for param in group["params"]
        if param.requires_grad and not optimizer.state.get(param)
    ]
    if not missing:
        return []
    grads = {param: param.grad for group in optimizer.param_groups for param in group["params"]}
    rates = [group["lr"] for group in optimizer.param_groups]
    try:
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
            group["lr"] = torch.zeros_like(group["lr"]) if isinstance(group["lr"], torch.Tensor) else 0.0
        for param in missing:
            param.grad = torch.zeros_like(param)
        optimizer.step()
    finally:
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        for param, grad in grads.items():
            param.grad = grad
    for param in missing:
        step = optimizer.state[param].get("step")
        if isinstance(step, torch.Tensor):
            step.zero_()
        elif step is not None:
            optimizer.state[param]["step"] = 0
    return missing


__all__ = [
    "complete_optimizer_state",
    "group_learning_rates",
    "group_name",
    "layerwise_optimizer",
    "layerwise_parameter_groups",
]
