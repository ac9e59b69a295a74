"""Freeze policies and the gradual-unfreezing (ULMFiT) schedule.

What never trains is decided once, from the arguments, before the model is wrapped: DDP registers
trainable parameters when it wraps the model, so `requires_grad` of a wrapped model must not change.
Gradual unfreezing therefore works in two modes (`hydrabert.callbacks.FreezingCallback`): in one process it toggles
`requires_grad` (no backward through frozen layers: cheap); under DDP every layer that will ever
train keeps `requires_grad=True` and the trainer drops the gradients of layers whose turn has not
come, after the all-reduce and before clipping and the optimizer step (no update, no optimizer state).

The rules live here once: `frozen_by_arguments` (what a run's freeze settings never train), `check_something_trains`
(the "nothing would train" error), `unfreezing_schedule_from_arguments`. `MultiTaskTrainer` and `run_mtl.py` call them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

FREEZE_POLICIES = ("none", "all", "encoder", "heads")


def _num_layers(model: nn.Module) -> int:
    return model.config.encoder.num_hidden_layers


def frozen_parameter_names(
    model: nn.Module,
    freeze_policy: str = "none",
    frozen_tasks: Iterable[str] = (),
    freeze_embeddings: bool = False,
    freeze_lower_layers: int = 0,
) -> set[str]:
    """Names of the parameters that never train under these settings.

    - `freeze_policy`: "none"; "all" (feature extraction: nothing trains); "encoder" (the encoder is a
      fixed feature extractor, projection/adapter/heads train); "heads" (every task head is fixed).
    - `frozen_tasks`: freeze these tasks' heads only (e.g. old tasks while a new one is added).
    - `freeze_embeddings`: the token/position embeddings.
    - `freeze_lower_layers`: N freezes the embeddings and the lowest N encoder blocks.
    """
    if freeze_policy not in FREEZE_POLICIES:
        raise ValueError(f"freeze_policy must be one of {FREEZE_POLICIES}, got {freeze_policy!r}")
    frozen_tasks = list(frozen_tasks or ())
    unknown = [t for t in frozen_tasks if t not in model.config.tasks]
    if unknown:
        raise ValueError(f"frozen_tasks: unknown task(s) {unknown}; known tasks: {list(model.config.tasks)}")
    num_layers = _num_layers(model)
    if not 0 <= freeze_lower_layers <= num_layers:
        raise ValueError(
            f"freeze_lower_layers must be in [0, {num_layers}] for this encoder, got {freeze_lower_layers}"
        )

    frozen = set()
    for name, _ in model.named_parameters():
        depth = model.get_layer_depth(name)
        if (
            freeze_policy == "all"
            or (freeze_policy == "encoder" and depth <= num_layers)
            or (freeze_policy == "heads" and name.startswith("heads."))
            or any(name.startswith(f"heads.{task}.") for task in frozen_tasks)
            or (freeze_embeddings and depth == 0)
            or (freeze_lower_layers and depth <= freeze_lower_layers)
        ):
            frozen.add(name)
    return frozen


def unfreezing_schedule_from_arguments(model: nn.Module, args) -> UnfreezingSchedule | None:
    """The gradual-unfreezing schedule `args` asks for (`gradual_unfreezing`, `unfreeze_every`), None without one."""
    if not args.gradual_unfreezing:
        return None
    return UnfreezingSchedule(
        num_layers=_num_layers(model),
        unfreeze_every=args.unfreeze_every,
        lowest_trainable_depth=lowest_trainable_depth(args.freeze_embeddings, args.freeze_lower_layers),
    )


def set_requires_grad(model: nn.Module, frozen: set[str]) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)


@dataclass
class UnfreezingSchedule:
    """ULMFiT's gradual unfreezing: the encoder starts frozen (only what sits above it trains), and
    every `unfreeze_every` epochs one more encoder level joins, from the top block down to the
    embeddings. Levels below `lowest_trainable_depth` (fixed by the freeze settings) never join."""

    num_layers: int
    unfreeze_every: float = 1.0
    lowest_trainable_depth: int = 0

    def __post_init__(self):
        if not self.unfreeze_every > 0:
            raise ValueError(f"unfreeze_every must be > 0 epochs, got {self.unfreeze_every}")
        if self.lowest_trainable_depth > self.num_layers:
            raise ValueError(
                f"gradual_unfreezing has nothing to unfreeze: the freeze settings keep all {self.num_layers} "
                "encoder layers frozen for the whole run (freeze_lower_layers); lower freeze_lower_layers or "
                "turn gradual_unfreezing off"
            )

    def levels_unfrozen(self, epoch: float) -> int:
        # A small tolerance: Trainer's fractional epoch (step / steps_per_epoch) can land just below
        # an integer boundary.
        return int(math.floor(epoch / self.unfreeze_every + 1e-9))

    def trainable_depths(self, epoch: float) -> set[int]:
        """Depths that train at this (fractional) epoch: L+1 is the head side, 0 the embeddings."""
        top = self.num_layers + 1
        lowest = max(top - self.levels_unfrozen(epoch), self.lowest_trainable_depth)
        return set(range(lowest, top + 1))

    def epochs_to_fully_unfreeze(self) -> float:
        return (self.num_layers + 1 - self.lowest_trainable_depth) * self.unfreeze_every

    def describe(self, epoch: float) -> str:
        depths = sorted(self.trainable_depths(epoch))
        encoder = [d for d in depths if d <= self.num_layers]
        if not encoder:
            return "encoder frozen; projection/adapter/heads train"
        names = ["embeddings" if d == 0 else f"layer_{d - 1}" for d in encoder]
        return f"training encoder levels {names[0]}..{names[-1]} ({len(encoder)} of {self.num_layers + 1})"


def frozen_by_arguments(model: nn.Module, args) -> set[str]:
    """`frozen_parameter_names` from a run's arguments (MultiTaskTrainingArguments' freeze fields): the one
    place that reads them, for the trainer and for run_mtl.py's check before any output is written."""
    return frozen_parameter_names(
        model, args.freeze_policy, args.frozen_tasks, args.freeze_embeddings, args.freeze_lower_layers
    )


def check_something_trains(model: nn.Module, frozen: set[str], args) -> None:
    """Refuse a training run whose freeze settings leave no parameter to train, saying what to do instead."""
    if all(name in frozen for name, _ in model.named_parameters()):
        raise ValueError(
            f"Nothing would train: the freeze settings (freeze_policy={args.freeze_policy!r}, "
            f"frozen_tasks={args.frozen_tasks}) freeze every parameter. For feature extraction use "
            "trainer.evaluate(), model.predict() or model.encode() (run_mtl.py: do_train false); to train, "
            "choose another freeze_policy."
        )


def lowest_trainable_depth(freeze_embeddings: bool, freeze_lower_layers: int) -> int:
    if freeze_lower_layers:
        return freeze_lower_layers + 1
    return 1 if freeze_embeddings else 0


__all__ = [
    "FREEZE_POLICIES",
    "UnfreezingSchedule",
    "check_something_trains",
    "frozen_by_arguments",
    "frozen_parameter_names",
    "lowest_trainable_depth",
    "set_requires_grad",
    "unfreezing_schedule_from_arguments",
]
