"""MultiTaskTrainer: the HF Trainer with layer-wise learning rates, freeze policies, gradual
unfreezing, task sampling and per-task evaluation.

A thin subclass: it overrides documented hooks (`create_optimizer`, `get_train_dataloader`,
`compute_loss`, `training_step`, `evaluate`, `log`) and never rewrites `train()`'s loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import EvalPrediction, Trainer, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import speed_metrics

from .checkpoints import TRAINER_STATE_NAME, incomplete_checkpoints, resolve_resume_checkpoint
from .configuration_hydrabert import HEADLESS_PROBLEM_TYPES, is_nonnegative_number
from .data import (
    SAMPLING_STRATEGIES,
    MultiTaskBatchSampler,
    MultiTaskCollator,
    build_multitask_dataset,
    check_padded,
    label_tasks,
    per_task_datasets,
    token_lengths,
)
from .data.collation import MODEL_INPUTS
from .embedding_preservation import EmbeddingTeacher
from .feature_cache import FrozenEncoder
from .freezing import (
    FREEZE_POLICIES,
    UnfreezingSchedule,
    check_something_trains,
    frozen_by_arguments,
    lowest_trainable_depth,
    set_requires_grad,
)
from .hardware import cpu_bf16_support, resolve_bf16
from .metrics import load_metric
from .model_card import ModelCardCallback, generate_model_card
from .optim import layerwise_parameter_groups
from .plots import PlotsCallback
from .selection import (
    describe_checkpoint_selection,
    early_stopping_callbacks,
    is_selection_metric,
    selection_score,
    set_up_checkpoint_selection,
)

logger = logging.getLogger(__name__)


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus layer-wise learning rates, freeze policies and task sampling."""

    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "Layer-wise learning-rate decay ξ in (0, 1]: encoder layer k of L trains at lr * ξ**(L-k), "
            "the embeddings at lr * ξ**L. 1.0 turns it off."
        },
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the projection, adapter and task heads (default: learning_rate)."
        },
    )
    freeze_policy: str = field(
        default="none",
        metadata={
            "help": "What never trains: 'none'; 'all' (feature extraction, nothing trains); 'encoder' (only the "
            "projection, adapter and heads train); 'heads' (every task head is fixed)."
        },
    )
    frozen_tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "Freeze these tasks' heads only (e.g. old tasks when adding a new one)."},
    )
    freeze_embeddings: bool = field(default=False, metadata={"help": "Freeze the encoder's embeddings."})
    freeze_lower_layers: int = field(
        default=0,
        metadata={"help": "Freeze the embeddings and the lowest N encoder layers (transfer learning)."},
    )
    gradual_unfreezing: bool = field(
        default=False,
        metadata={
            "help": "ULMFiT: start with the encoder frozen and unfreeze one more layer from the top every "
            "`unfreeze_every` epochs."
        },
    )
    unfreeze_every: float = field(
        default=1.0, metadata={"help": "Epochs between two unfreezing steps (fractions allowed)."}
    )
    task_sampling: str = field(
        default="proportional",
        metadata={"help": f"Which task each batch comes from: one of {list(SAMPLING_STRATEGIES)}."},
    )
    sampling_temperature: float = field(
        default=2.0,
        metadata={
            "help": "With task_sampling='temperature': p_i ∝ n_i ** (1 / T); 1 = proportional, large = uniform."
        },
    )
    task_weights: dict | str | None = field(
        default=None,
        metadata={
            "help": 'Loss weight per task, e.g. \'{"sentiment": 1.0, "topic": 0.5}\' (overrides the config).'
        },
    )
    mixed_task_batches: bool = field(
        default=False, metadata={"help": "Batches that mix tasks (default: one task per batch)."}
    )
    embedding_preservation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Keep the sentence embedding through task training: add this weight times the mean "
            "(1 - cosine) between each training sentence's embedding and the model's embedding of it before "
            "training (a frozen copy). 0 turns it off. See docs/embeddings.md."
        },
    )
    cache_frozen_encoder: bool = field(
        default=True,
        metadata={
            "help": "When the encoder never trains (e.g. freeze_policy='encoder'), compute each example's encoder "
            "output once and reuse it in later epochs and evaluations (same results, epochs after the first "
            "skip the encoder). Costs hidden_size floats per example."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop when metric_for_best_model (default: selection_score, the mean over tasks of each task's "
            "main metric) has not improved for this many evaluations, and load the best checkpoint at the end; "
            "num_train_epochs / max_steps are then the cap. Evaluates every epoch unless eval_strategy says "
            "otherwise, and saves a checkpoint at every evaluation. None: train the whole length."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={
            "help": "With early_stopping_patience: how much better a metric must be to count as better."
        },
    )
    # Changed default: None resolves to True with early_stopping_patience, so that a resumed run continues the
    # patience count saved in its checkpoint (transformers' default, False, would start it again at 0).
    restore_callback_states_from_checkpoint: bool | None = field(
        default=None,
        metadata={
            "help": "Restore callbacks' saved states (e.g. the early-stopping patience count) when resuming. "
            "Default: True with early_stopping_patience, else False."
        },
    )
    # Changed defaults: length-grouped batches waste little on padding; our collator needs the
    # `task_id` column, which the signature-based column filter would drop.
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch examples of similar length together."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs task_id."}
    )

    def __post_init__(self):
        # Before TrainingArguments checks them: what early stopping and checkpoint selection need.
        set_up_checkpoint_selection(self)
        self._resolve_cpu_bf16()
        super().__post_init__()
        # A JSON string from the command line or a JSON config (parsed here, not through the base
        # class's dict fields, so that a malformed string gets an error that names the field).
        if isinstance(self.task_weights, str):
            try:
                self.task_weights = json.loads(self.task_weights)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"task_weights must be a JSON object, got {self.task_weights!r}: {err}"
                ) from None
        if self.task_weights is not None and not isinstance(self.task_weights, dict):
            raise ValueError(f"task_weights must be a dict of task -> weight, got {self.task_weights!r}")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")
        if self.head_learning_rate is not None and self.head_learning_rate < 0:
            raise ValueError(f"head_learning_rate must be >= 0, got {self.head_learning_rate}")
        if self.freeze_policy not in FREEZE_POLICIES:
            raise ValueError(f"freeze_policy must be one of {FREEZE_POLICIES}, got {self.freeze_policy!r}")
        if self.freeze_lower_layers < 0:
            raise ValueError(f"freeze_lower_layers must be >= 0, got {self.freeze_lower_layers}")
        if not self.unfreeze_every > 0:
            raise ValueError(f"unfreeze_every must be > 0 epochs, got {self.unfreeze_every}")
        if self.gradual_unfreezing and self.freeze_policy in ("all", "encoder"):
            raise ValueError(
                f"gradual_unfreezing unfreezes encoder layers, but freeze_policy={self.freeze_policy!r} keeps the "
                "encoder frozen for the whole run: use freeze_policy='none' (optionally with freeze_lower_layers)."
            )
        if self.task_sampling not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"task_sampling must be one of {list(SAMPLING_STRATEGIES)}, got {self.task_sampling!r}"
            )
        if not is_nonnegative_number(self.embedding_preservation_weight):
            raise ValueError(
                f"embedding_preservation_weight must be a finite number >= 0, got {self.embedding_preservation_weight!r}"
            )
        if not self.sampling_temperature > 0:
            raise ValueError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")
        if self.mixed_task_batches and self.task_sampling != "proportional":
            raise ValueError("mixed_task_batches needs task_sampling='proportional'")
        # BERT updates buffers in place, which breaks DDP's buffer broadcast; and every head joins the
        # graph on every batch, so DDP need not search for unused parameters.
        if self.ddp_broadcast_buffers is None:
            self.ddp_broadcast_buffers = False
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        # torch pins memory only for an accelerator, and without one warns at every dataloader iteration
        # ("'pin_memory' argument is set as true but no accelerator is found"): off on a CPU-only machine.
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False

    def _resolve_cpu_bf16(self) -> None:
        """`bf16="auto"` (run configs, Python) becomes a bool from what the hardware offers; and bf16 on a
        machine without an accelerator trains on the CPU, where TrainingArguments alone would refuse ("Your setup
        doesn't support bf16/gpu") unless use_cpu is also given."""
        self.bf16 = resolve_bf16(self.bf16, use_cpu=self.use_cpu)
        if self.bf16 and (self.use_cpu or not torch.accelerator.is_available()):
            support = cpu_bf16_support()
            if support.fast:
                logger.info("bf16 autocast on the CPU (found %s)", support.describe())
            else:
                logger.warning(
                    "bf16 on a CPU with %s: PyTorch emulates bf16 there, expect it slower than fp32",
                    support.describe(),
                )
            self.use_cpu = True


class MultiTaskTrainer(Trainer):
    """Trains a `HydraBertModel` on several tasks at once.

    Args:
        model: a `HydraBertModel` (its config's tasks name the heads).
        args: `MultiTaskTrainingArguments`.
        train_dataset / eval_dataset: `{task name: tokenized datasets.Dataset}` (see `hydrabert.data`). An entry
            may instead be a shared source (any name; its `labels` hold `{task: label or None}` per row): it trains
            as one unit, every task it labels from one encoder pass per batch, and is evaluated task by task on
            each task's labelled rows (docs/shared-sources.md).
        compute_metrics: optional `fn(task_name, EvalPrediction) -> dict`; default: accuracy and macro-F1
            (classification), MSE (regression), Spearman and Pearson of the cosine similarities
            (sentence similarity).
        Everything else as `transformers.Trainer`.
    """

    def __init__(
        self,
        model=None,
        args: MultiTaskTrainingArguments | None = None,
        train_dataset: Mapping[str, Dataset] | None = None,
        eval_dataset: Mapping[str, Dataset] | None = None,
        processing_class=None,
        data_collator=None,
        compute_metrics: Callable[[str, EvalPrediction], dict] | None = None,
        **kwargs,
    ):
        if model is None:
            raise ValueError("MultiTaskTrainer needs a model (a HydraBertModel)")
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="hydrabert_output")
        elif not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(f"args must be MultiTaskTrainingArguments, got {type(args).__name__}")
        for name, datasets_ in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            _check_task_datasets(model, datasets_, name)
        _apply_task_weights(model, args.task_weights)
        # Freezing happens here, before anything wraps the model (DDP registers parameters once).
        self._set_up_freezing(model, args)

        # The embedding as training starts, copied before anything trains or wraps the model.
        weight = args.embedding_preservation_weight
        self.embedding_teacher = EmbeddingTeacher(model, weight) if weight > 0 and train_dataset else None
        self.task_datasets = dict(train_dataset) if train_dataset is not None else None
        # A shared source is evaluated task by task, on each task's labelled rows.
        self.eval_datasets = per_task_datasets(eval_dataset) if eval_dataset is not None else None
        combined = None
        if train_dataset is not None:
            combined, _ = build_multitask_dataset(train_dataset, task_names=model.task_names)
        if data_collator is None:
            data_collator = _default_collator(processing_class, train_dataset, eval_dataset)
        self.task_compute_metrics = compute_metrics or default_task_metrics(model)
        # task -> (summed training loss as a device tensor, steps) since the last log
        self._task_loss_sums: dict[str, tuple[torch.Tensor, int]] = {}
        self._eval_task: str | None = None  # the task evaluate() is on (read by the eval hooks)
        # Fill the model card (recipe, per-task results) and draw the plots as training runs.
        self.card_callback = ModelCardCallback()
        self.plots_callback = PlotsCallback()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.card_callback, self.plots_callback]
        # Early stopping's callback, judged only once gradual unfreezing has released the last encoder layer.
        kwargs["callbacks"] += early_stopping_callbacks(model, args, kwargs["callbacks"], self.unfreezing)
        super().__init__(
            model=model,
            args=args,
            train_dataset=combined,
            eval_dataset=self.eval_datasets,
            processing_class=processing_class,
            data_collator=data_collator,
            **kwargs,
        )
        # A frozen encoder runs without dropout, and computes each example once (feature_cache.py):
        # in one process all of them up front, length-sorted; under DDP lazily, as each rank meets them.
        self.frozen_encoder = FrozenEncoder.from_trainer(
            self, prefill=self._frozen_encoder_batches if self.args.world_size == 1 else None
        )
        if self.frozen_encoder is not None:
            self.add_callback(self.frozen_encoder)

    def _set_up_freezing(self, model, args: MultiTaskTrainingArguments) -> None:
        """Freeze what the policies never train, and plan the gradual unfreezing of the rest."""
        self.never_trained = frozen_by_arguments(model, args)
        self.unfreezing = None
        if args.gradual_unfreezing:
            self.unfreezing = UnfreezingSchedule(
                num_layers=model.config.encoder.num_hidden_layers,
                unfreeze_every=args.unfreeze_every,
                lowest_trainable_depth=lowest_trainable_depth(
                    args.freeze_embeddings, args.freeze_lower_layers
                ),
            )
        set_requires_grad(model, self.never_trained)
        self._waiting = set()  # parameters whose unfreezing turn has not come yet
        self._unfrozen_levels = None

    # ------------------------------------------------------------------------------- optimizer
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """One parameter group per (depth, weight decay or not), with layer-wise learning rates,
        for whichever optimizer `args.optim` names."""
        opt_model = self.model if model is None else model
        if self.optimizer is not None:
            return self.optimizer
        unwrapped = self.accelerator.unwrap_model(opt_model)
        # Layers that gradual unfreezing will release later are in the optimizer from the start:
        # their gradients stay None until then, and torch optimizers skip such parameters.
        trainable = [(n, p) for n, p in unwrapped.named_parameters() if n not in self.never_trained]
        groups = layerwise_parameter_groups(
            unwrapped,
            learning_rate=self.args.learning_rate,
            layerwise_lr_decay=self.args.layerwise_lr_decay,
            head_learning_rate=self.args.head_learning_rate,
            weight_decay=self.args.weight_decay,
            parameters=trainable,
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if (
            "params" in optimizer_kwargs
            or "model" in optimizer_kwargs
            or "optimizer_dict" in optimizer_kwargs
        ):
            raise ValueError(
                f"optim={self.args.optim!r} builds its own parameter groups, which would drop the layer-wise "
                "learning rates; choose a standard optimizer (e.g. adamw_torch, adamw_torch_fused, sgd, adafactor)."
            )
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------------------------ data
    def get_train_batch_sampler(self) -> MultiTaskBatchSampler:
        """The sampler that decides training's batches (before DDP sharding): benchmarks call it to see
        exactly the batches `train()` will run."""
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset")
        return MultiTaskBatchSampler(
            self.train_dataset.task_lengths(),
            batch_size=self._train_batch_size,
            strategy=self.args.task_sampling,
            temperature=self.args.sampling_temperature,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            drop_last=self.args.dataloader_drop_last,
            group_by_length=self.args.group_by_length,
            mixed=self.args.mixed_task_batches,
        )

    def get_train_dataloader(self) -> DataLoader:
        batch_sampler = self.get_train_batch_sampler()
        probabilities = batch_sampler.task_probabilities()
        logger.info(
            "task sampling %s: %s",
            self.args.task_sampling,
            ", ".join(f"{name} p={p:.3f}" for name, p in probabilities.items()),
        )
        dataloader = DataLoader(
            self.train_dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers
            and self.args.dataloader_num_workers > 0,
        )
        # Under DDP accelerate shards the batch sampler: rank r takes batches r, r + N, ...
        return self.accelerator.prepare(dataloader)

    def _frozen_encoder_batches(self):
        """Every example training will encode (train rows, and validation rows when training evaluates),
        longest first, in batches of `eval_batch_size`: sorted rows hardly pad, and the longest batch
        comes first, so one that does not fit in memory fails at once."""
        sources = [self.train_dataset]
        if self.eval_datasets and self.args.eval_strategy != "no":
            sources += [
                build_multitask_dataset({task: dataset}, task_names=self.model.task_names)[0]
                for task, dataset in self.eval_datasets.items()
            ]
        rows = []  # (token length, source, global index in the source)
        for number, source in enumerate(sources):
            lengths = [n for task_lengths in source.task_lengths().values() for n in task_lengths]
            rows += [(length, number, index) for index, length in enumerate(lengths)]
        rows.sort(key=lambda row: -row[0])
        size = self.args.eval_batch_size
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            features = []
            for number, source in enumerate(sources):  # one batched Arrow read per source
                indices = [index for _, source_number, index in batch if source_number == number]
                if indices:
                    features += source.__getitems__(indices)
            # Token inputs only: the cache needs no labels, and rows of a shared source carry theirs by task.
            yield self.data_collator([{k: row[k] for k in MODEL_INPUTS if k in row} for row in features])

    # ---------------------------------------------------------------------------------- training
    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer.train() needs a train_dataset ({task name: dataset})")
        check_something_trains(self.model, self.never_trained, self.args)
        # True: the last *complete* checkpoint (transformers takes the highest-numbered folder, even one
        # whose write was interrupted); a path must hold a complete checkpoint.
        resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if self.args.load_best_model_at_end:
            logger.info(describe_checkpoint_selection(self.args, self.model.config.tasks, self.unfreezing))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    @property
    def plot_files(self) -> list[str]:
        """The plot files (names in `args.output_dir`) that `PlotsCallback` wrote last."""
        return self.plots_callback.files

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.unfreezing is not None:
            self._follow_unfreezing_schedule()
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._waiting and self._distributed:
            # Under DDP the waiting layers keep requires_grad (DDP registered them when it wrapped the
            # model) and their gradients were all-reduced like the rest; dropping them here, before
            # clipping and the optimizer step, means they neither move nor gain optimizer state.
            for param in self._waiting_params():
                param.grad = None
        return loss

    @property
    def _distributed(self) -> bool:
        return self.accelerator.num_processes > 1

    def _waiting_params(self):
        return [
            p for n, p in self.accelerator.unwrap_model(self.model).named_parameters() if n in self._waiting
        ]

    def _follow_unfreezing_schedule(self) -> None:
        epoch = self.state.epoch or 0.0
        levels = self.unfreezing.levels_unfrozen(epoch)
        if levels == self._unfrozen_levels:
            return
        model = self.accelerator.unwrap_model(self.model)
        depths = self.unfreezing.trainable_depths(epoch)
        self._waiting = {
            name
            for name, _ in model.named_parameters()
            if name not in self.never_trained and model.get_layer_depth(name) not in depths
        }
        if not self._distributed:
            # One process: really stop the backward at the frozen layers (the cheap way).
            for name, param in model.named_parameters():
                if name not in self.never_trained:
                    param.requires_grad_(name not in self._waiting)
        self._unfrozen_levels = levels
        message = f"gradual unfreezing at epoch {epoch:.2f}: {self.unfreezing.describe(epoch)}"
        logger.info(message)
        if self.is_world_process_zero():
            self.state.log_history.append(
                {"unfreezing": self.unfreezing.describe(epoch), "step": self.state.global_step}
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = self.frozen_encoder(model, inputs) if self.frozen_encoder is not None else model(**inputs)
        loss = outputs.loss
        if not torch.isfinite(loss).all():
            tasks = sorted(outputs.task_losses or {})
            bad = [t for t in tasks if not torch.isfinite(outputs.task_losses[t]).all()]
            raise FloatingPointError(
                f"Non-finite training loss ({loss.item()}) at step {self.state.global_step}, task(s) "
                f"{bad or tasks}. Lower the learning rate or check the data; checkpoints saved before this "
                f"step in {self.args.output_dir} are intact (resume_from_checkpoint)."
            )
        task_losses = dict(outputs.task_losses or {})
        if model.training and self.embedding_teacher is not None:
            features = self.frozen_encoder.last_features if self.frozen_encoder is not None else None
            term, distance = self.embedding_teacher.loss(outputs.sentence_embedding, inputs, features)
            loss = loss + term
            task_losses["embedding_preservation"] = distance
        if model.training and task_losses:
            # Summed as tensors on the device: no host sync per step (log() reads them, once per logging step).
            for task, value in task_losses.items():
                total, count = self._task_loss_sums.get(task, (0.0, 0))
                self._task_loss_sums[task] = (total + value.detach().float(), count + 1)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------------------ saving, card
    def _save_checkpoint(self, model, trial):
        """The base class writes checkpoint-N in place, trainer_state.json last, then rotates old ones.
        Before that: a trainer_state.json left in checkpoint-N by an earlier run would make a half-written
        rewrite look complete, so it goes first; and incomplete checkpoint folders (interrupted writes)
        go too, as nothing can resume from them and save_total_limit rotation would count (and, ordering
        by step, protect) them instead of the complete ones."""
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            target = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
            stale_state = os.path.join(target, TRAINER_STATE_NAME)
            if os.path.isfile(stale_state):
                os.remove(stale_state)
            for path, problem in incomplete_checkpoints(run_dir).items():
                if os.path.normpath(path) != os.path.normpath(target):
                    logger.warning("Removing incomplete checkpoint %s (%s)", path, problem)
                    shutil.rmtree(path, ignore_errors=True)
        super()._save_checkpoint(model, trial)

    def create_model_card(self, **overrides):
        """Writes README.md in the output directory from the card data gathered during training
        (`Trainer.push_to_hub` calls this before it uploads the folder)."""
        if not self.is_world_process_zero():
            return None
        # What a run can tell the card; not `tasks`: Trainer.push_to_hub's own card arguments (finetuned_from,
        # tasks, dataset...) are a string's worth each, where the card reads the model.
        known = {
            "model_name",
            "language",
            "license",
            "tags",
            "datasets",
            "dataset_sizes",
            "validation_split_percentage",
            "max_seq_length",
            "base_model",
            "revision",
            "model_id",
            "example_sentences",
        }
        overrides = {k: v for k, v in overrides.items() if k in known and v is not None}
        if "model_id" not in overrides and self.args.hub_model_id:
            overrides["model_id"] = self.args.hub_model_id
        return generate_model_card(
            self.accelerator.unwrap_model(self.model),
            self.args.output_dir,
            card_data=self.card_callback.card_data,
            tokenizer=self.processing_class,
            **overrides,
        )

    # -------------------------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds every layer group's learning rate (the base Trainer logs group 0 only) and each
        task's mean training loss since the last log."""
        if "loss" in logs and self.optimizer is not None:
            seen = set()
            for group in self.optimizer.param_groups:
                name = group.get("name", "").removesuffix(".no_decay")
                if name and name not in seen:
                    seen.add(name)
                    logs[f"lr/{name}"] = group["lr"]
            logs.update(self._task_training_losses())
        super().log(logs, start_time)

    def _task_training_losses(self) -> dict[str, float]:
        """`loss/<task>`: each task's mean training loss since the last log, over all processes (one host
        sync here, none per step). Every process takes part (log() runs on all of them at a logging step)."""
        tasks = self.accelerator.unwrap_model(self.model).task_names
        if self.embedding_teacher is not None:  # the same list on every process: the reduce below pairs them
            tasks = [*tasks, "embedding_preservation"]
        device = self.args.device
        totals = torch.stack(
            [torch.as_tensor(self._task_loss_sums.get(t, (0.0, 0))[0], device=device).float() for t in tasks]
        )
        counts = torch.tensor([self._task_loss_sums.get(t, (0.0, 0))[1] for t in tasks], device=device)
        self._task_loss_sums = {}
        if self._distributed:
            totals = self.accelerator.reduce(totals, reduction="sum")
            counts = self.accelerator.reduce(counts, reduction="sum")
        return {
            f"loss/{task}": round(total / count, 4)
            for task, total, count in zip(tasks, totals.tolist(), counts.tolist(), strict=True)
            if count
        }

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(
        self,
        eval_dataset: Mapping[str, Dataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluates every task on its own data with `Trainer.evaluate`: `{prefix}_{task}_{metric}` for each
        task (its loss, and what `compute_metrics` returns for it), `{prefix}_average_{metric}` over the tasks
        that report that metric, and the run's speed. Logged, and given to `on_evaluate`, once."""
        datasets_ = eval_dataset if eval_dataset is not None else self.eval_datasets
        if datasets_ is None:
            raise ValueError("MultiTaskTrainer.evaluate() needs eval_dataset ({task name: dataset})")
        if not isinstance(datasets_, Mapping):
            raise TypeError(
                f"eval_dataset must be a dict {{task name: dataset}}, got {type(datasets_).__name__}"
            )
        _check_units(self.model, datasets_, "eval_dataset")
        datasets_ = per_task_datasets(datasets_)
        start_time = time.time()
        metrics: dict[str, float] = {}
        num_samples = 0
        for task, dataset in datasets_.items():
            # Trainer.evaluate's own loop on each task's data; the log and on_evaluate happen once, below, so
            # that callbacks (early stopping, model card, plots) see one combined report.
            with self._evaluating(task):
                output = self.evaluation_loop(
                    self.get_eval_dataloader(dataset),
                    description=f"Evaluation ({task})",
                    ignore_keys=ignore_keys,
                    metric_key_prefix=f"{metric_key_prefix}_{task}",
                )
            metrics.update(output.metrics)
            num_samples += len(dataset)
        metrics.update(_averages(metrics, metric_key_prefix, list(datasets_)))
        # One number for "which checkpoint is best" (hydrabert/selection.py); required when it selects them.
        specs = self.accelerator.unwrap_model(self.model).config.tasks
        kinds = {task: specs[task]["problem_type"] for task in datasets_}
        required = (
            self.is_in_train
            and metric_key_prefix == "eval"
            and is_selection_metric(self.args.metric_for_best_model)
        )
        metrics.update(selection_score(metrics, metric_key_prefix, kinds, required=required))
        metrics.update(
            speed_metrics(
                metric_key_prefix,
                start_time,
                num_samples=num_samples,
                num_steps=math.ceil(num_samples / (self.args.eval_batch_size * self.args.world_size)),
            )
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @contextlib.contextmanager
    def _evaluating(self, task: str):
        """While the evaluation loop runs on one task: its batches and metrics are that task's."""
        self._eval_task = task
        self.compute_metrics = functools.partial(self._task_metrics, task)
        try:
            yield
        finally:
            self._eval_task, self.compute_metrics = None, None
            # The progress bar of an evaluation closes at on_evaluate, which comes once for all tasks: close
            # each task's bar here, so that every task gets its own (sized to its own batches) instead of one
            # that overruns the first task's total.
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, ProgressCallback):
                    callback.on_evaluate(self.args, self.state, self.control)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        """The batches of the task being evaluated, longest first (batches of similar length pad little; the
        order does not change metrics). Under DDP accelerate shards them; `gather_for_metrics` drops the
        rows it repeats to even out the shards."""
        if self._eval_task is None or eval_dataset is None:
            raise ValueError(
                "MultiTaskTrainer evaluates task by task: call trainer.evaluate({task name: dataset})"
            )
        task = self._eval_task
        task_dataset, _ = build_multitask_dataset({task: eval_dataset}, task_names=self.model.task_names)
        lengths = task_dataset.task_lengths()[task]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        dataloader = DataLoader(
            task_dataset,
            batch_size=self.args.eval_batch_size,
            sampler=order,
            collate_fn=_SingleTaskCollator(self.data_collator, task),
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(dataloader)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Returns no batch loss but, with the task's logits, each row's loss: `Trainer.evaluation_loop` would
        average batch means (a short last batch weighs as a full one, and under DDP the rows repeated to even
        out the shards count too); rows gathered with `gather_for_metrics` lose the repeats, and their mean is
        the data set's loss whatever the batching or the number of processes."""
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            if labels is None:
                outputs = model(**inputs)
            else:
                _, outputs = self.compute_loss(model, inputs, return_outputs=True)
        logits = outputs.logits
        if labels is None:
            return None, logits, None
        task = inputs["task"]
        unwrapped = self.accelerator.unwrap_model(model)
        row_losses = unwrapped.per_example_loss(task, logits, labels)
        if unwrapped.config.tasks[task]["problem_type"] in HEADLESS_PROBLEM_TYPES:
            # A pair fills two rows (its first sentence, then its second: the collator's layout) with the same
            # similarity and score: keep one per pair, so that rows gathered across processes are the data set's.
            half = len(labels) // 2
            logits, row_losses, labels = logits[:half], row_losses[:half], labels[:half]
        return None, (logits, row_losses), labels

    def _task_metrics(self, task: str, prediction: EvalPrediction) -> dict[str, float]:
        """`loss` (the mean of the rows' losses) and what `compute_metrics` gives for `task`."""
        predictions = prediction.predictions
        if not isinstance(predictions, tuple):  # no labels: metrics need them
            return {}
        logits, row_losses = predictions
        counted = row_losses[~np.isnan(row_losses)]
        metrics = {"loss": float(counted.mean()) if counted.size else float("nan")}
        if self.model.config.tasks[task]["problem_type"] in HEADLESS_PROBLEM_TYPES:
            metrics = {}  # no loss of one row to average (CoSENT ranks a batch's pairs against each other)
        metrics.update(
            self.task_compute_metrics(
                task, EvalPrediction(predictions=logits, label_ids=prediction.label_ids)
            )
        )
        return metrics


class _SingleTaskCollator:
    """Evaluation batches of one task: the model gets `task=name` and returns that task's logits."""

    def __init__(self, collator, task: str):
        self.collator = collator
        self.task = task

    def __call__(self, features):
        batch = self.collator(features)
        batch.pop("task_ids", None)
        batch["task"] = self.task
        return batch


def _default_collator(processing_class, train_dataset, eval_dataset) -> MultiTaskCollator:
    """Pads with `processing_class`; without one, padded data is stacked as is (as default_data_collator
    does), and unpadded data fails here, not mid-run."""
    if processing_class is None:
        for what, task_datasets in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            for task, dataset in (task_datasets or {}).items():
                check_padded(token_lengths(dataset), f"{what}[{task!r}]")
    return MultiTaskCollator(processing_class)


def _check_task_datasets(model, datasets_, what: str) -> None:
    if datasets_ is None:
        return
    if not isinstance(datasets_, Mapping):
        raise TypeError(f"{what} must be a dict {{task name: dataset}}, got {type(datasets_).__name__}")
    _check_units(model, datasets_, what)


def _check_task_names(model, names, what: str) -> None:
    unknown = [name for name in names if name not in model.config.tasks]
    if unknown:
        raise ValueError(f"{what}: unknown task(s) {unknown}; the model's tasks are {model.task_names}")


def _check_units(model, datasets_: Mapping, what: str) -> None:
    """Each key of `datasets_` names a task, or holds a shared source whose labels name tasks."""
    _check_task_names(
        model, [name for name, dataset in datasets_.items() if label_tasks(dataset) is None], what
    )
    for name, dataset in datasets_.items():
        _check_task_names(model, label_tasks(dataset) or [], f"{what}[{name!r}] (a shared source)")


def _apply_task_weights(model, task_weights: dict | None) -> None:
    if not task_weights:
        return
    _check_task_names(model, task_weights, "task_weights")
    tasks = {name: dict(spec) for name, spec in model.config.tasks.items()}
    for name, weight in task_weights.items():
        if not is_nonnegative_number(weight):
            raise ValueError(f"task_weights[{name!r}] must be a finite number >= 0, got {weight!r}")
        tasks[name]["weight"] = float(weight)
    model.config.tasks = tasks


def _averages(metrics: dict[str, float], prefix: str, tasks: list[str]) -> dict[str, float]:
    """Mean of each metric (loss, accuracy, f1, spearman, ...) over the tasks that report it: classification
    tasks' accuracy is averaged without a similarity task, which reports Spearman instead."""
    per_metric: dict[str, list[float]] = {}
    for task in tasks:
        head = f"{prefix}_{task}_"
        for key, value in metrics.items():
            if key.startswith(head) and isinstance(value, (int, float)):
                per_metric.setdefault(key[len(head) :], []).append(float(value))
    skip = {"runtime", "samples_per_second", "steps_per_second", "model_preparation_time"}
    return {
        f"{prefix}_average_{name}": float(np.mean(values))
        for name, values in per_metric.items()
        if name not in skip
    }


def default_task_metrics(model) -> Callable[[str, EvalPrediction], dict]:
    """Accuracy and macro-F1 for classification (via the `evaluate` modules shipped in
    `hydrabert/metrics`), mean squared error for regression.

    `f1` is the usual macro-F1 (scikit-learn's and `evaluate`'s default): the mean over the labels that occur
    in the references or the predictions. `f1_declared_labels` is the mean over every label of the task, so
    that a label absent from both counts as F1 = 0; the two differ only when a split lacks a label that the
    model never predicts either."""
    tasks = model.config.tasks

    def compute(task: str, prediction: EvalPrediction) -> dict:
        logits = np.asarray(prediction.predictions)
        references = np.asarray(prediction.label_ids)
        problem_type = tasks[task]["problem_type"]
        if problem_type == "sentence_similarity":
            return similarity_correlations(logits, references)
        if problem_type == "regression":
            values = logits.squeeze(-1) if logits.ndim > 1 and logits.shape[-1] == 1 else logits
            return {"mse": float(np.mean((values - references) ** 2))}
        declared = list(range(tasks[task]["num_labels"]))
        if problem_type == "multi_label_classification":
            predicted = (logits > 0).astype(int)
            truth = references.astype(int)
            present = np.flatnonzero((predicted | truth).any(axis=0)).tolist() or declared
            accuracy = load_metric("accuracy", "multilabel").compute(
                predictions=predicted.tolist(), references=truth.tolist()
            )
            return {
                "accuracy": accuracy["accuracy"],
                **_macro_f1(predicted, truth, present, declared, "multilabel"),
            }
        keep = references != -100
        predicted = logits.argmax(-1)[keep].tolist()
        truth = references[keep].tolist()
        accuracy = load_metric("accuracy").compute(predictions=predicted, references=truth)
        return {"accuracy": accuracy["accuracy"], **_macro_f1(predicted, truth, None, declared)}

    return compute


def similarity_correlations(similarities, scores) -> dict[str, float]:
    """`spearman` and `pearson`: how the cosine similarities of the pairs rank and follow their gold scores.

    A sentence-similarity task's rows come in pairs, each pair's similarity and score on both its rows: every
    pair is there twice, which leaves both correlations unchanged (ranks of a doubled sample are an affine map
    of the single sample's ranks)."""
    from scipy.stats import pearsonr, spearmanr

    similarities, scores = np.asarray(similarities, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    return {
        "spearman": float(spearmanr(similarities, scores).statistic),
        "pearson": float(pearsonr(similarities, scores).statistic),
    }


def _macro_f1(predicted, truth, present, declared, config_name=None) -> dict[str, float]:
    """`f1` over the labels present in references or predictions (`present`; None: scikit-learn finds them),
    `f1_declared_labels` over every label of the task."""
    metric = load_metric("f1", config_name)
    predicted, truth = np.asarray(predicted).tolist(), np.asarray(truth).tolist()
    return {
        name: metric.compute(predictions=predicted, references=truth, average="macro", labels=labels)["f1"]
        for name, labels in (("f1", present), ("f1_declared_labels", declared))
    }


__all__ = ["MultiTaskTrainer", "MultiTaskTrainingArguments", "default_task_metrics"]
