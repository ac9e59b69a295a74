"""Training policies as `TrainerCallback`s, and which of them a `MultiTaskTrainer` runs.

| callback                                   | what it does                                             | events                       |
|--------------------------------------------|----------------------------------------------------------|------------------------------|
| `FreezingCallback` (here)                  | freezes what never trains; gradual unfreezing (ULMFiT)   | on_init_end, on_step_begin   |
| `FrozenEncoder` (feature_cache.py)         | each example's frozen-encoder features computed once     | on_train_begin, on_train_end |
| `ModelCardCallback` (model_card.py)        | fills the model card's data (recipe, results, history)   | train begin/end, evaluate, log |
| `PlotsCallback` (plots.py)                 | learning-rate and task-metric plots in output_dir        | optimizer step, evaluate, train end |
| `HydraEarlyStoppingCallback` (selection.py)| stops when the selection score stops improving           | on_evaluate                  |

`MultiTaskTrainer` composes them from its arguments (`policy_callbacks`), after the callbacks given in its
`callbacks=[...]`; a callback given there replaces ours of the same class (e.g. a `ModelCardCallback` holding your
own `HydraBertCardData`), and the Trainer's own `trainer.remove_callback(PlotsCallback)` drops one.

What the callbacks cannot reach stays in the trainer, each with a comment saying why: the forward through the
feature cache (`compute_loss`: no event sees the batch before the forward), dropping the gradients of layers whose
unfreezing turn has not come under DDP (`training_step`: no event comes between the backward and the gradient
clipping), and the clean-up of incomplete checkpoints (`_save_checkpoint`: no event comes before a save).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from accelerate.utils import extract_model_from_parallel
from torch import nn
from transformers import TrainerCallback

from .feature_cache import FrozenEncoder
from .freezing import (
    UnfreezingSchedule,
    frozen_by_arguments,
    set_requires_grad,
    unfreezing_schedule_from_arguments,
)
from .model_card import ModelCardCallback
from .plots import PlotsCallback
from .selection import HydraEarlyStoppingCallback, early_stopping_callbacks

logger = logging.getLogger(__name__)


class FreezingCallback(TrainerCallback):
    """Freezes the parameters in `never_trained` (`requires_grad=False`) when the trainer is built, before anything
    wraps the model (DDP registers the trainable parameters once, when it wraps it); and with an `unfreezing`
    schedule, releases the encoder from the top down as the epochs pass (hydrabert/freezing.py).

    In one process the layers whose turn has not come get `requires_grad=False` (no backward through them: the
    cheap mode). Under DDP they keep it, and `waiting` names them: `MultiTaskTrainer.training_step` drops their
    gradients after the all-reduce, before clipping and the optimizer step (see `drop_waiting_gradients`).
    """

    def __init__(self, never_trained: Iterable[str] = (), unfreezing: UnfreezingSchedule | None = None):
        self.never_trained = set(never_trained)
        self.unfreezing = unfreezing
        self.waiting: set[str] = set()  # parameters whose unfreezing turn has not come yet
        self._levels: int | None = None  # encoder levels unfrozen at the last step

    @classmethod
    def from_args(cls, model: nn.Module, args) -> FreezingCallback:
        """The frozen set and schedule of `args`' freeze settings (`freeze_policy`, `frozen_tasks`,
        `freeze_embeddings`, `freeze_lower_layers`, `gradual_unfreezing`, `unfreeze_every`)."""
        return cls(frozen_by_arguments(model, args), unfreezing_schedule_from_arguments(model, args))

    def on_init_end(self, args, state, control, model=None, **kwargs):
        set_requires_grad(extract_model_from_parallel(model), self.never_trained)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        # Before the step's first micro-batch: the epoch, and so the schedule, only moves between optimizer steps.
        if self.unfreezing is None:
            return
        epoch = state.epoch or 0.0
        levels = self.unfreezing.levels_unfrozen(epoch)
        if levels == self._levels:
            return
        model = extract_model_from_parallel(model)
        depths = self.unfreezing.trainable_depths(epoch)
        self.waiting = {
            name
            for name, _ in model.named_parameters()
            if name not in self.never_trained and model.get_layer_depth(name) not in depths
        }
        if args.world_size == 1:
            # One process: really stop the backward at the frozen layers (the cheap way).
            for name, param in model.named_parameters():
                if name not in self.never_trained:
                    param.requires_grad_(name not in self.waiting)
        self._levels = levels
        described = self.unfreezing.describe(epoch)
        logger.info("gradual unfreezing at epoch %.2f: %s", epoch, described)
        if state.is_world_process_zero:
            state.log_history.append({"unfreezing": described, "step": state.global_step})

    def drop_waiting_gradients(self, model: nn.Module) -> None:
        """Sets the gradients of the waiting layers to None (torch optimizers skip such parameters): under DDP,
        after the backward has all-reduced them."""
        if self.waiting:
            for name, param in extract_model_from_parallel(model).named_parameters():
                if name in self.waiting:
                    param.grad = None


def policy_callbacks(
    model: nn.Module, args, given: Sequence, freezing: FreezingCallback
) -> list[TrainerCallback]:
    """hydrabert's callbacks for a run with `args` (`MultiTaskTrainingArguments`), to follow the callbacks the user
    `given`: the model card, the plots, early stopping (with `early_stopping_patience`) and `freezing`. One of a
    class that `given` holds (an instance or the class) is left out: the user's replaces it. The feature cache
    (`FrozenEncoder`) needs the built trainer: `MultiTaskTrainer.__init__` adds it after the Trainer's."""
    ours = [
        ModelCardCallback(),
        PlotsCallback(),
        *early_stopping_callbacks(model, args, given, freezing.unfreezing),
        freezing,
    ]
    return [callback for callback in ours if not _holds(given, type(callback))]


def find_callback(callbacks: Iterable, cls: type) -> TrainerCallback | None:
    """The first instance of `cls` in `callbacks` (e.g. `trainer.callback_handler.callbacks`), None if none."""
    return next((callback for callback in callbacks if isinstance(callback, cls)), None)


def _holds(callbacks: Sequence, cls: type) -> bool:
    return any(
        isinstance(callback, cls) or (isinstance(callback, type) and issubclass(callback, cls))
        for callback in callbacks
    )


__all__ = [
    "FreezingCallback",
    "FrozenEncoder",
    "HydraEarlyStoppingCallback",
    "ModelCardCallback",
    "PlotsCallback",
    "find_callback",
    "policy_callbacks",
]
