"""MultiTaskTrainer: the HF Trainer with layer-wise learning rates, task sampling and per-task evaluation.

A thin subclass: it keeps the data, the loss, the optimizer groups and evaluation, overriding documented hooks
(`create_optimizer`, `get_train_dataloader`, `compute_loss`, `training_step`, `evaluate`, `log`), and never
rewrites `train()`'s loop. The training policies (freezing and gradual unfreezing, the frozen-encoder feature
cache, the model card, the plots, early stopping) are `TrainerCallback`s it composes from its arguments
(hydrabert/callbacks.py).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import EvalPrediction, Trainer, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import speed_metrics

from .callbacks import FreezingCallback, ModelCardCallback, PlotsCallback, find_callback, policy_callbacks
from .checkpoints import clear_for_checkpoint, resolve_resume_checkpoint
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
from .data.streaming import (
    DEFAULT_BUFFER_SIZE,
    StreamingBatches,
    StreamingDataLoader,
    is_stream,
    streaming_batches,
)
from .embedding_preservation import EmbeddingTeacher
from .engines import check_deepspeed, check_fsdp, configure_fsdp_plugin
from .feature_cache import FrozenEncoder
from .freezing import FREEZE_POLICIES, check_something_trains
from .hardware import cpu_bf16_support, resolve_bf16
from .metrics import default_task_metrics, evaluation_metrics, similarity_correlations, task_averages
from .metrics.task_losses import TaskLossMeans
from .model_card import write_run_card
from .optim import complete_optimizer_state, group_learning_rates, layerwise_optimizer
from .selection import (
    describe_checkpoint_selection,
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
    stream_buffer_size: int = field(
        default=DEFAULT_BUFFER_SIZE,
        metadata={
            "help": "Streamed tasks: rows read before they are sorted by length and cut into batches "
            "(hydrabert/data/streaming.py)."
        },
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
        # Before TrainingArguments sets the engine up: what cannot work with DeepSpeed or FSDP.
        check_deepspeed(self)
        check_fsdp(self)
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
        callbacks: as `transformers.Trainer`; they run before hydrabert's policies (hydrabert/callbacks.py:
            freezing and gradual unfreezing, the frozen-encoder feature cache, the model card, the plots, early
            stopping), and one of the same class replaces ours. `trainer.remove_callback(PlotsCallback)` drops one.
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
        callbacks: list | None = None,
        **kwargs,
    ):
        args = _checked_arguments(model, args, train_dataset, eval_dataset)
        _apply_task_weights(model, args.task_weights)
        callbacks = list(callbacks or [])
        # What never trains, and the unfreezing schedule: read by the optimizer groups and the feature cache.
        self.freezing = find_callback(callbacks, FreezingCallback) or FreezingCallback.from_args(model, args)
        callbacks += policy_callbacks(model, args, callbacks, self.freezing)

        # The embedding as training starts, copied before anything trains or wraps the model.
        weight = args.embedding_preservation_weight
        self.embedding_teacher = EmbeddingTeacher(model, weight) if weight > 0 and train_dataset else None
        self.task_datasets = dict(train_dataset) if train_dataset is not None else None
        # A shared source is evaluated task by task, on each task's labelled rows.
        self.eval_datasets = per_task_datasets(eval_dataset) if eval_dataset is not None else None
        if data_collator is None:
            data_collator = _default_collator(processing_class, train_dataset, eval_dataset)
        combined = _combined_train_data(train_dataset, model.task_names, data_collator, args)
        self.task_compute_metrics = compute_metrics or default_task_metrics(model)
        self.task_losses = TaskLossMeans()  # each task's training loss between two logs
        self._eval_task: str | None = None  # the task evaluate() is on (read by the eval hooks)
        super().__init__(
            model=model,
            args=args,
            train_dataset=combined,
            eval_dataset=self.eval_datasets,
            processing_class=processing_class,
            data_collator=data_collator,
            callbacks=callbacks,
            **kwargs,
        )
        # FSDP's units: the encoder's blocks, unless the accelerate config names them (hydrabert/engines.py).
        configure_fsdp_plugin(getattr(self.accelerator.state, "fsdp_plugin", None), model)
        # A frozen encoder runs without dropout, and computes each example once (feature_cache.py). Built here, as
        # it needs the accelerator; `compute_loss` routes the forward through it.
        self.frozen_encoder = FrozenEncoder.from_trainer(self)
        if self.frozen_encoder is not None:
            self.add_callback(self.frozen_encoder)

    @property
    def card_callback(self) -> ModelCardCallback | None:
        """The `ModelCardCallback` whose data `create_model_card` renders (None once removed)."""
        return find_callback(self.callback_handler.callbacks, ModelCardCallback)

    @property
    def plots_callback(self) -> PlotsCallback | None:
        """The `PlotsCallback` that draws the plots (None once removed)."""
        return find_callback(self.callback_handler.callbacks, PlotsCallback)

    @property
    def plot_files(self) -> list[str]:
        """The plot files (names in `args.output_dir`) that the `PlotsCallback` wrote last."""
        return self.plots_callback.files if self.plots_callback is not None else []

    # ------------------------------------------------------------------------------- optimizer
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """One parameter group per (depth, weight decay or not), with layer-wise learning rates,
        for whichever optimizer `args.optim` names."""
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = layerwise_optimizer(
                self.accelerator.unwrap_model(opt_model),
                self.args,
                self.freezing.never_trained,
                optimizer_cls,
                optimizer_kwargs,
            )
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
        if isinstance(self.train_dataset, StreamingBatches):
            logger.info("streamed tasks, sampled per row: %s", self.train_dataset.probabilities)
            # Not through accelerator.prepare: each process already reads its own rows (split_dataset_by_node),
            # which accelerate's sharding of an iterable would cut again.
            return StreamingDataLoader(
                self.train_dataset,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
            )
        batch_sampler = self.get_train_batch_sampler()
        probabilities = ", ".join(
            f"{name} p={p:.3f}" for name, p in batch_sampler.task_probabilities().items()
        )
        logger.info("task sampling %s: %s", self.args.task_sampling, probabilities)
        # Under DDP accelerate shards the batch sampler: rank r takes batches r, r + N, ...
        return self.accelerator.prepare(
            _sampled_dataloader(self.train_dataset, batch_sampler, self.data_collator, self.args)
        )

    # ---------------------------------------------------------------------------------- training
    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer.train() needs a train_dataset ({task name: dataset})")
        check_something_trains(self.model, self.freezing.never_trained, self.args)
        # True: the last *complete* checkpoint (transformers takes the highest-numbered folder, even one
        # whose write was interrupted); a path must hold a complete checkpoint.
        resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if self.args.load_best_model_at_end:
            unfreezing = self.freezing.unfreezing
            logger.info(describe_checkpoint_selection(self.args, self.model.config.tasks, unfreezing))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.num_processes > 1:
            # Gradual unfreezing under DDP: the layers whose turn has not come keep requires_grad (DDP registered
            # them when it wrapped the model) and their gradients were all-reduced like the rest; dropped here,
            # they neither move, gain optimizer state nor count in the clipped norm. Not in FreezingCallback: no
            # event comes between the backward and the clipping (on_pre_optimizer_step comes after it).
            self.freezing.drop_waiting_gradients(model)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The feature cache's forward (FrozenEncoder): no callback event sees the batch before the forward.
        outputs = self.frozen_encoder(model, inputs) if self.frozen_encoder is not None else model(**inputs)
        loss = outputs.loss
        _check_finite(outputs, self.state.global_step, self.args.output_dir)
        task_losses = dict(outputs.task_losses or {})
        if model.training and self.embedding_teacher is not None:
            features = self.frozen_encoder.last_features if self.frozen_encoder is not None else None
            term, distance = self.embedding_teacher.loss(outputs.sentence_embedding, inputs, features)
            loss = loss + term
            task_losses["embedding_preservation"] = distance
        if model.training and task_losses:
            self.task_losses.add(task_losses)  # on the device: log() reads them, once per logging step
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------------------ saving, card
    def _save_checkpoint(self, model, trial):
        # Stale and incomplete checkpoint folders go before the base class writes checkpoint-N (checkpoints.py).
        # Not a callback: on_save comes after the write, and no event comes before it.
        if self.args.should_save:
            clear_for_checkpoint(self._get_output_dir(trial=trial), self.state.global_step)
        # Under FSDP the checkpoint must hold every trainable parameter's optimizer state to load (optim.py).
        if self.is_fsdp_enabled:
            complete_optimizer_state(self.optimizer)
        super()._save_checkpoint(model, trial)

    def create_model_card(self, **fields):
        """Writes README.md in the output directory from the card data the `ModelCardCallback` gathered during
        training (`Trainer.push_to_hub` calls this before it uploads the folder); `fields` of RUN_CARD_FIELDS."""
        return write_run_card(self, **fields) if self.is_world_process_zero() else None

    # -------------------------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds every layer group's learning rate (the base Trainer logs group 0 only) and each
        task's mean training loss since the last log."""
        if "loss" in logs and self.optimizer is not None:
            logs.update({f"lr/{name}": lr for name, lr in group_learning_rates(self.optimizer).items()})
            logs.update(self._task_training_losses())
        super().log(logs, start_time)

    def _task_training_losses(self) -> dict[str, float]:
        """`loss/<task>`: each task's mean training loss since the last log, over all processes (one host
        sync here, none per step). Every process takes part (log() runs on all of them at a logging step)."""
        tasks = self.accelerator.unwrap_model(self.model).task_names
        if self.embedding_teacher is not None:  # the same list on every process: the reduce pairs them
            tasks = [*tasks, "embedding_preservation"]
        over_processes = self.accelerator.num_processes > 1
        reduce = functools.partial(self.accelerator.reduce, reduction="sum") if over_processes else None
        return self.task_losses.pop_means(tasks, self.args.device, reduce)

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(
        self,
        eval_dataset: Mapping[str, Dataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluates every task on its own data with `Trainer.evaluation_loop`: `{prefix}_{task}_{metric}` for
        each task (its loss, and what `compute_metrics` returns for it), `{prefix}_average_{metric}` over the
        tasks that report that metric, and the run's speed. Logged, and given to `on_evaluate`, once."""
        datasets_ = eval_dataset if eval_dataset is not None else self.eval_datasets
        if datasets_ is None:
            raise ValueError("MultiTaskTrainer.evaluate() needs eval_dataset ({task name: dataset})")
        _check_units(self.model, datasets_, "eval_dataset")
        datasets_ = per_task_datasets(datasets_)
        self._memory_tracker.start()
        start_time = time.time()
        metrics: dict[str, float] = {}
        for task, dataset in datasets_.items():
            metrics.update(self._evaluate_task(task, dataset, ignore_keys, f"{metric_key_prefix}_{task}"))
        metrics.update(task_averages(metrics, metric_key_prefix, list(datasets_)))
        # One number for "which checkpoint is best" (hydrabert/selection.py); required when it selects them.
        specs = self.accelerator.unwrap_model(self.model).config.tasks
        selecting = is_selection_metric(self.args.metric_for_best_model)
        required = self.is_in_train and metric_key_prefix == "eval" and selecting
        kinds = {task: specs[task]["problem_type"] for task in datasets_}
        metrics.update(selection_score(metrics, metric_key_prefix, kinds, required=required))
        num_samples = sum(len(dataset) for dataset in datasets_.values())
        num_steps = math.ceil(num_samples / (self.args.eval_batch_size * self.args.world_size))
        metrics.update(
            speed_metrics(metric_key_prefix, start_time, num_samples=num_samples, num_steps=num_steps)
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _evaluate_task(self, task: str, dataset: Dataset, ignore_keys, prefix: str) -> dict[str, float]:
        """What `Trainer.evaluate` runs on one data set, `evaluation_loop`, on one task's rows: its batches and
        metrics are that task's. No log() and no on_evaluate here: `evaluate` reports all the tasks at once."""
        problem_type = self.accelerator.unwrap_model(self.model).config.tasks[task]["problem_type"]
        compute = functools.partial(evaluation_metrics, task, problem_type, self.task_compute_metrics)
        self._eval_task, self.compute_metrics = task, compute
        try:
            output = self.evaluation_loop(
                self.get_eval_dataloader(dataset),
                f"Evaluation ({task})",
                ignore_keys=ignore_keys,
                metric_key_prefix=prefix,
            )
        finally:
            self._eval_task, self.compute_metrics = None, None
        # ProgressCallback closes its evaluation bar in on_evaluate, which comes once, after the last task: closed
        # here, each task gets its own bar (sized to its own batches) instead of one that overruns the first's.
        progress = find_callback(self.callback_handler.callbacks, ProgressCallback)
        if progress is not None:
            progress.on_evaluate(self.args, self.state, self.control)
        return output.metrics

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        """The batches of the task being evaluated, longest first (batches of similar length pad little; the
        order does not change metrics). Under DDP accelerate shards them; `gather_for_metrics` drops the
        rows it repeats to even out the shards."""
        if self._eval_task is None or eval_dataset is None:
            raise ValueError(
                "MultiTaskTrainer evaluates task by task: call trainer.evaluate({task name: dataset})"
            )
        collate = _SingleTaskCollator(self.data_collator, self._eval_task)
        task_names = self.accelerator.unwrap_model(self.model).task_names
        return self.accelerator.prepare(
            _longest_first_dataloader(eval_dataset, task_names, collate, self.args)
        )

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
        return None, *_rows_of_batch(self.accelerator.unwrap_model(model), inputs["task"], logits, labels)


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


def _rows_of_batch(model, task: str, logits, labels):
    """`((logits, per-row losses), labels)` of an evaluation batch, one row per example. A similarity pair fills
    two rows (its first sentence, then its second: the collator's layout) with the same similarity and score:
    one is kept, so that rows gathered across processes are the data set's."""
    row_losses = model.per_example_loss(task, logits, labels)
    if model.config.tasks[task]["problem_type"] in HEADLESS_PROBLEM_TYPES:
        half = len(labels) // 2
        logits, row_losses, labels = logits[:half], row_losses[:half], labels[:half]
    return (logits, row_losses), labels


def _check_finite(outputs, step: int, output_dir: str) -> None:
    """A non-finite loss stops training with the step and the task(s) whose loss it was."""
    if torch.isfinite(outputs.loss).all():
        return
    tasks = sorted(outputs.task_losses or {})
    bad = [t for t in tasks if not torch.isfinite(outputs.task_losses[t]).all()]
    raise FloatingPointError(
        f"Non-finite training loss ({outputs.loss.item()}) at step {step}, task(s) {bad or tasks}. Lower the learning "
        f"rate or check the data; checkpoints saved before this step in {output_dir} are intact (resume_from_checkpoint)."
    )


def _combined_train_data(train_dataset, task_names, collator, args):
    """All tasks' training rows as one `MultiTaskDataset`, or, with streamed tasks (`datasets.IterableDataset`),
    the `StreamingBatches` drawn from the streams as training reads them; None without a train_dataset."""
    if train_dataset is None:
        return None
    streamed = streaming_batches(train_dataset, task_names, collator, args)
    return (
        streamed if streamed is not None else build_multitask_dataset(train_dataset, task_names=task_names)[0]
    )


def _sampled_dataloader(dataset, batch_sampler, collate_fn, args) -> DataLoader:
    """The training batches `batch_sampler` draws, with the Trainer's dataloader settings."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=args.dataloader_num_workers,
        pin_memory=args.dataloader_pin_memory,
        persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
    )


def _longest_first_dataloader(dataset, task_names, collate: _SingleTaskCollator, args) -> DataLoader:
    """One task's rows, longest first, in batches of `args.eval_batch_size`."""
    task_dataset, _ = build_multitask_dataset({collate.task: dataset}, task_names=task_names)
    lengths = task_dataset.task_lengths()[collate.task]
    return DataLoader(
        task_dataset,
        batch_size=args.eval_batch_size,
        sampler=sorted(range(len(lengths)), key=lambda i: -lengths[i]),
        collate_fn=collate,
        num_workers=args.dataloader_num_workers,
        pin_memory=args.dataloader_pin_memory,
    )


def _default_collator(processing_class, train_dataset, eval_dataset) -> MultiTaskCollator:
    """Pads with `processing_class`; without one, padded data is stacked as is (as default_data_collator
    does), and unpadded data fails here, not mid-run."""
    if processing_class is None:
        for what, task_datasets in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            for task, dataset in (task_datasets or {}).items():
                # A stream's rows are not read up front; the collator checks each batch.
                if not is_stream(dataset):
                    check_padded(token_lengths(dataset), f"{what}[{task!r}]")
    return MultiTaskCollator(processing_class)


def _checked_arguments(model, args, train_dataset, eval_dataset) -> MultiTaskTrainingArguments:
    """`args` (defaults when None), once the model and the data sets are what MultiTaskTrainer takes."""
    if model is None:
        raise ValueError("MultiTaskTrainer needs a model (a HydraBertModel)")
    if args is None:
        args = MultiTaskTrainingArguments(output_dir="hydrabert_output")
    elif not isinstance(args, MultiTaskTrainingArguments):
        raise TypeError(f"args must be MultiTaskTrainingArguments, got {type(args).__name__}")
    for what, datasets_ in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        if datasets_ is not None:
            _check_units(model, datasets_, what)
    return args


def _check_task_names(model, names, what: str) -> None:
    unknown = [name for name in names if name not in model.config.tasks]
    if unknown:
        raise ValueError(f"{what}: unknown task(s) {unknown}; the model's tasks are {model.task_names}")


def _check_units(model, datasets_: Mapping, what: str) -> None:
    """`datasets_` is a dict, and each key names a task or holds a shared source whose labels name tasks."""
    if not isinstance(datasets_, Mapping):
        raise TypeError(f"{what} must be a dict {{task name: dataset}}, got {type(datasets_).__name__}")
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


# default_task_metrics and similarity_correlations live in hydrabert.metrics; importable from here as before.
__all__ = [
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "default_task_metrics",
    "similarity_correlations",
]
