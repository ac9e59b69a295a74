"""Model cards: `HydraBertCardData` (a `huggingface_hub.CardData`) filled by `ModelCardCallback` while a
Trainer runs, rendered by one `ModelCard.from_template` call from the Jinja template in `model_cards/`,
whose `{% if %}` blocks drop the sections a card has nothing for. `to_yaml()` is the Hub metadata, built
by the Hub's own `ModelCardData`/`EvalResult` (`model-index`); `to_dict()` is what the template shows.

    card_callback = ModelCardCallback(HydraBertCardData(model_id="me/hydrabert-sst2-trec", language="en"))
    trainer = MultiTaskTrainer(..., callbacks=[card_callback]); trainer.train()
    generate_model_card(model, args.output_dir, card_data=card_callback.card_data, tokenizer=tokenizer)
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import TrainerCallback

from .selection import kept_checkpoint

TEMPLATE_PATH = Path(__file__).parent / "model_cards" / "model_card.md"
# What a training run can tell the card (`MultiTaskTrainer.create_model_card(**fields)`); not `tasks`:
# Trainer.push_to_hub's own card arguments (finetuned_from, tasks, dataset...) are a string's worth each, where the
# card reads the model.
RUN_CARD_FIELDS = frozenset(
    "model_name language license tags datasets dataset_sizes validation_split_percentage max_seq_length "
    "base_model revision model_id example_sentences".split()
)
DEFAULT_TAGS = ["hydrabert", "multi-task", "sentence-embeddings", "text-classification"]
PLOT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".svg", ".gif")
DEFAULT_EXAMPLES = [
    "This movie was a delight from start to finish.",
    "Where can I find the nearest train station?",
]
# The recipe fields `MultiTaskTrainingArguments` adds to `TrainingArguments` (read with getattr, so plain
# TrainingArguments give the defaults), and the TrainingArguments fields the recipe states itself; all of
# them stay out of the hyperparameter table.
RECIPE_DEFAULTS = {
    **dict.fromkeys(
        "head_learning_rate frozen_tasks freeze_embeddings freeze_lower_layers gradual_unfreezing "
        "unfreeze_every sampling_temperature task_weights early_stopping_patience".split()
    ),
    "early_stopping_threshold": 0.0,
    **{"layerwise_lr_decay": 1.0, "freeze_policy": "none", "task_sampling": "proportional"},
}
_RECIPE_BASE_FIELDS = (
    "learning_rate lr_scheduler_type num_train_epochs max_steps per_device_train_batch_size "
    "gradient_accumulation_steps seed bf16 fp16 load_best_model_at_end metric_for_best_model greater_is_better".split()
)
# Not hyperparameters: where things go, how they are logged and saved, credentials; and values that
# __post_init__ resolves from None/"" defaults (hydrabert sets the two ddp_ ones for DDP).
_SKIPPED_ARG_PREFIXES = tuple("output_ overwrite_output logging_ hub_ push_to_hub save_ trackio_".split())
_SKIPPED_ARG_NAMES = set(
    "ddp_broadcast_buffers ddp_find_unused_parameters accelerator_config run_name project report_to "
    "resume_from_checkpoint local_rank disable_tqdm log_level log_level_replica log_on_each_node "
    "do_train do_eval do_predict restore_callback_states_from_checkpoint".split()
)
# Metrics that describe the evaluation run, not the model.
_RUN_METRICS = set(
    "runtime samples_per_second steps_per_second jit_compilation_time model_preparation_time".split()
)
_SPLIT_NAMES = {"eval": "validation", "test": "test", "train": "train"}
_MAX_HISTORY_ROWS = 12
_LOG_COLUMNS = {"loss": "Training loss", "learning_rate": "Learning rate (top layer)"}


@dataclass
class HydraBertCardData(CardData):
    """Everything a HydraBERT model card says. Fill it by hand, with `update_from_model`/`update_from_args`,
    or let `ModelCardCallback` fill it during training. The fields a run sets (generate_model_card's
    overrides): `model_id` (the repo id in the usage snippets), `model_name` (title and `model-index`
    name), `base_model` (a Hub id goes into the metadata, a local path only into the text), `language`,
    `license`, `tags`, `datasets` (`{task: Hub id or local path}`), `dataset_sizes` (`{task: {split: n}}`),
    `validation_split_percentage` (`{task: percent}`: validation rows held out of train),
    `max_seq_length` (what training truncated to), `revision` (the commit the snippets pin).
    The rest comes from the model (`tasks`, `architecture`), the training arguments (`training`,
    `hyperparameters`), evaluations (`results`: `{split: {task: {metric: value}}}`, `average_results`,
    `eval_history`), logs (`training_logs`, `train_summary`), the output directory (`plots`), and, when the
    run loaded its best checkpoint at the end, which one and why (`kept_checkpoint`, see
    `hydrabert.selection.kept_checkpoint`)."""

    model_id: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)
    dataset_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    validation_split_percentage: dict[str, float] = field(default_factory=dict)
    max_seq_length: int | None = None
    revision: str | None = None
    tasks: dict[str, dict] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    average_results: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    training_logs: list[dict[str, Any]] = field(default_factory=list)
    train_summary: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    kept_checkpoint: dict[str, Any] | None = None
    example_sentences: list[str] = field(default_factory=DEFAULT_EXAMPLES.copy)
    example_predictions: list[dict] | None = None

    # ------------------------------------------------------------------------------------ filling
    def update_from_model(self, model) -> None:
        """Tasks, architecture facts and (unless already set) the base model, from a `HydraBertModel`."""
        config, encoder = model.config, model.config.encoder
        keys = ("num_labels", "labels", "problem_type", "weight", "class_weights")
        self.tasks = {name: {k: spec[k] for k in keys if k in spec} for name, spec in config.tasks.items()}
        self.architecture = {
            "encoder_type": getattr(encoder, "model_type", None),
            "num_layers": getattr(encoder, "num_hidden_layers", None),
            "hidden_size": getattr(encoder, "hidden_size", None),
            "max_position_embeddings": getattr(encoder, "max_position_embeddings", None),
            "embedding_dim": config.embedding_dim,
            "pooling": config.pooling,
            "embedding_activation": getattr(config, "embedding_activation", None),
            "head_input": getattr(config, "head_input", None),
            "adapter_size": config.adapter_size,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
        if self.base_model is None:
            self.base_model = getattr(encoder, "_name_or_path", None) or None
        if self.max_seq_length is None:  # the training length the model carries (config.max_seq_length)
            self.max_seq_length = getattr(config, "max_seq_length", None)

    def update_from_args(self, args) -> None:
        """The training recipe and the non-default hyperparameters, from (MultiTask)TrainingArguments."""
        recipe = {name: _plain(getattr(args, name, default)) for name, default in RECIPE_DEFAULTS.items()}
        recipe.update({name: _plain(getattr(args, name, None)) for name in _RECIPE_BASE_FIELDS})
        recipe["world_size"] = getattr(args, "world_size", 1)
        self.training = recipe
        self.hyperparameters = non_default_arguments(args, exclude={*RECIPE_DEFAULTS, *_RECIPE_BASE_FIELDS})

    def add_metrics(self, metrics: dict, step: int | None = None, epoch: float | None = None, history=True):
        """Sort `{prefix}_{task}_{metric}` / `{prefix}_average_{metric}` / `{prefix}_{metric}` keys into
        per-split, per-task results (the latest evaluation of a split wins) and, with `history`, a row of
        the evaluation history. Prefixes `eval` and `test` become the splits `validation` and `test`."""
        tasks = sorted(self.tasks, key=len, reverse=True)  # longest first: "topic_fine" before "topic"
        rows: dict[str, dict] = {}
        for key, value in metrics.items():
            if "_" not in key or not _is_number(value):
                continue
            prefix, rest = key.split("_", 1)
            split = _SPLIT_NAMES.get(prefix, prefix)
            task = next((t for t in tasks if rest.startswith(t + "_")), None)
            if task is not None:
                metric = rest[len(task) + 1 :]
                if metric not in _RUN_METRICS:
                    self.results.setdefault(split, {}).setdefault(task, {})[metric] = float(value)
                continue
            if rest.startswith("average_"):
                self.average_results.setdefault(split, {})[rest[len("average_") :]] = float(value)
            if rest not in _RUN_METRICS:
                rows.setdefault(split, {"step": step, "epoch": epoch, "split": split})[rest] = float(value)
        if history:
            self.eval_history.extend(rows.values())

    def add_log(self, logs: dict, step: int | None = None, epoch: float | None = None) -> None:
        """Keep a logging step's training loss and learning rate, and the end-of-training summary. The
        learning rate kept is the top encoder layer's (`lr/layer_{L-1}`, which `MultiTaskTrainer` logs):
        with layer-wise decay that is the configured peak; the Trainer's own `learning_rate` is group 0's."""
        if any(k.startswith("train_") for k in logs):
            self.train_summary.update({k: float(v) for k, v in logs.items() if _is_number(v)})
            return
        top = f"lr/layer_{(self.architecture.get('num_layers') or 0) - 1}"
        row = {k: float(logs[k]) for k in ("loss", "grad_norm") if _is_number(logs.get(k))}
        rate = logs.get(top, logs.get("learning_rate"))
        if _is_number(rate):
            row["learning_rate"] = float(rate)
        if row:
            self.training_logs.append({"step": step, "epoch": epoch, **row})

    # ---------------------------------------------------------------------------------- metadata
    @property
    def name(self) -> str:
        return self.model_name or (self.model_id.split("/")[-1] if self.model_id else "hydrabert-model")

    def hub_datasets(self) -> dict[str, str]:
        return {task: ds for task, ds in self.datasets.items() if _is_hub_id(ds)}

    def eval_results(self) -> list[EvalResult]:
        """One `EvalResult` per (split, task, metric). A validation split held out of train is reported
        as the dataset's `train` split with the held-out percentage in `dataset_args`. The Hub keeps one
        `model-index` entry per (dataset, split), whatever the task: tasks evaluated on the same Hub dataset
        and split (the tasks of a shared source, say) share that entry, named after all of them, and their
        results come together, so that the card reads back as written."""
        hub, rows = self.hub_datasets(), []
        for split, per_task in self.results.items():
            for task, metrics in per_task.items():
                dataset, dataset_split, dataset_args, shown = hub.get(task, task), split, None, split
                if split == "validation" and task in self.validation_split_percentage:
                    percent = self.validation_split_percentage[task]
                    dataset_split, dataset_args = "train", {"validation_split_percentage": percent}
                    shown = f"validation: {_fmt(percent)}% of train held out"
                rows.append(((dataset, dataset_split), task, dataset_args, shown, metrics))
        tasks_of: dict[tuple, list[str]] = {}
        for entry, task, *_ in rows:
            tasks_of.setdefault(entry, []).append(task)
        out = []
        for entry, tasks in tasks_of.items():
            (dataset, dataset_split), name = entry, ", ".join(tasks)
            for _, task, dataset_args, shown, metrics in (row for row in rows if row[0] == entry):
                out += [
                    EvalResult(
                        task_type="text-classification",
                        task_name=name,
                        dataset_type=dataset,
                        dataset_name=name if dataset == task else f"{name} ({dataset})",
                        dataset_split=dataset_split,
                        dataset_args=dataset_args,
                        metric_type=metric,
                        metric_name=f"{task} {metric} ({shown})",
                        metric_value=round(value, 4),
                    )
                    for metric, value in metrics.items()
                ]
        return out

    def metadata(self) -> ModelCardData:
        """The card's YAML metadata, as the Hub's own class (which writes `model-index`)."""
        eval_results = self.eval_results()
        metrics = sorted({m for tasks in self.results.values() for ms in tasks.values() for m in ms})
        return ModelCardData(
            language=self.language,
            license=self.license,
            library_name="transformers",
            tags=list(dict.fromkeys(DEFAULT_TAGS + list(self.tags))),
            base_model=self.base_model if _is_hub_id(self.base_model) else None,
            datasets=list(dict.fromkeys(self.hub_datasets().values())) or None,
            metrics=metrics or None,
            pipeline_tag="text-classification",
            model_name=self.name if eval_results else None,
            eval_results=eval_results or None,
        )

    def to_yaml(self, line_break=None, original_order=None) -> str:
        return self.metadata().to_yaml(line_break=line_break)

    def to_dict(self) -> dict[str, Any]:
        """What the template shows: the fields, plus the values it cannot easily derive itself."""
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        order = {"train": 0, "validation": 1, "test": 2}
        splits = {s for sizes in self.dataset_sizes.values() for s in sizes}
        values.update(
            name=self.name,
            base_model_hub=self.base_model if _is_hub_id(self.base_model) else None,
            languages=[self.language] if isinstance(self.language, str) else list(self.language or []),
            hub_datasets=self.hub_datasets(),
            example_sentences=list(self.example_sentences) or DEFAULT_EXAMPLES.copy(),
            dataset_splits=sorted(splits, key=lambda s: (order.get(s, 3), s)),
            reported_metrics=sorted(
                {m for tasks in self.results.values() for ms in tasks.values() for m in ms}
            ),
            history=_history(self),
            plot_images={
                Path(p).stem.replace("_", " ").replace("-", " ").capitalize(): p for p in self.plots
            },
            versions=_versions(),
            fmt=_fmt,
            plural=_plural,
            human_count=_human_count,
            duration=_duration,
            describe_prediction=_describe_prediction,
            quote=lambda text: json.dumps(text, ensure_ascii=False),  # a Python string literal
        )
        return values


class ModelCardCallback(TrainerCallback):
    """Fills a `HydraBertCardData` while a `Trainer` runs: the model and the recipe when training starts,
    every evaluation's per-task metrics (`eval_*`, and `test_*` from `predict`), the logged loss and
    learning rate. Render it afterwards with `generate_model_card(model, output_dir, card_data=...)`."""

    def __init__(self, card_data: HydraBertCardData | None = None):
        self.card_data = card_data if card_data is not None else HydraBertCardData()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._see_model(model, refresh=True)
        self.card_data.update_from_args(args)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if metrics:
            self._see_model(model)
            self.card_data.add_metrics(metrics, step=state.global_step, epoch=state.epoch)

    def on_predict(self, args, state, control, metrics=None, model=None, **kwargs):
        if metrics:  # trainer.predict(): test_* metrics, not part of the training history
            self._see_model(model)
            self.card_data.add_metrics(metrics, step=state.global_step, epoch=state.epoch, history=False)

    def on_train_end(self, args, state, control, **kwargs):
        # After load_best_model_at_end has loaded the best checkpoint: which one, by what, and why training ended.
        kinds = {
            task: spec.get("problem_type") or "single_label_classification"
            for task, spec in self.card_data.tasks.items()
        }
        kept = self.card_data.kept_checkpoint = kept_checkpoint(args, state, kinds)
        if kept is not None:
            # The validation results describe the weights the model ends with (the last evaluation was of others).
            row = next(
                (r for r in state.log_history if r.get("step") == kept["step"] and kept["metric"] in r), None
            )
            if row is not None:
                self.card_data.add_metrics(row, step=kept["step"], epoch=row.get("epoch"), history=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.card_data.add_log(logs, step=state.global_step, epoch=state.epoch)

    def _see_model(self, model, refresh: bool = False) -> None:
        # The task names are needed to read metric keys; evaluate() may run before (or without) train().
        tasks = getattr(getattr(model, "config", None), "tasks", None)
        if isinstance(tasks, dict) and (refresh or not self.card_data.tasks):
            self.card_data.update_from_model(model)


def non_default_arguments(args, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields of a TrainingArguments dataclass whose value differs from the declared default, without
    paths, logging, saving, Hub and credential settings.

    Declared defaults, not a fresh default instance: building TrainingArguments during training resets
    accelerate's global state and breaks the running Trainer."""
    diff = {}
    for f in dataclasses.fields(args):
        name = f.name
        skipped = name in exclude or name in _SKIPPED_ARG_NAMES or name.startswith(_SKIPPED_ARG_PREFIXES)
        if not f.init or skipped or name.startswith("_") or "token" in name or name.endswith("_dir"):
            continue
        value = getattr(args, name, None)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if default in (None, "") and not value:
            continue  # an unset default that __post_init__ resolved to an empty/False value
        if _plain(value) != _plain(default):
            diff[name] = _plain(value)
    return diff


# ---------------------------------------------------------------------------------------- rendering
def render_model_card(
    card_data: HydraBertCardData, template_path: str | os.PathLike | None = None
) -> ModelCard:
    """The card (YAML metadata + Markdown body) for `card_data`, checked against the Hub's classes."""
    card = ModelCard.from_template(card_data, template_path=str(template_path or TEMPLATE_PATH))
    check_metadata_round_trip(card, card_data.metadata())
    return card


def check_metadata_round_trip(card: ModelCard, expected: ModelCardData) -> None:
    """Parse the written card back with huggingface_hub (what the Hub reads) and require the same metadata
    and the same `EvalResult`s: a `model-index` the Hub cannot parse raises in `ModelCard(...)` already."""
    parsed = ModelCard(str(card)).data
    if parsed.to_dict() != expected.to_dict() or (parsed.eval_results or []) != (expected.eval_results or []):
        raise ValueError(
            f"The model card's metadata does not read back the same through huggingface_hub:\n"
            f"written {expected.to_dict()}\nread back {parsed.to_dict()}"
        )


def generate_model_card(
    model, output_dir, card_data: HydraBertCardData | None = None, tokenizer=None, **overrides
):
    """Write `output_dir/README.md` for `model` and return it as a `huggingface_hub.ModelCard`.

    `card_data` (e.g. `ModelCardCallback.card_data`) is copied, not changed; the model refreshes tasks and
    architecture; `overrides` set card-data fields (`model_id=`, `revision=`, `max_seq_length=`...).
    With a `tokenizer`, the usage snippet shows the model's real predictions for the example sentences."""
    card_data = copy.deepcopy(card_data) if card_data is not None else HydraBertCardData()
    known = {f.name for f in dataclasses.fields(HydraBertCardData)}
    if set(overrides) - known:
        raise TypeError(
            f"Unknown model-card field(s) {sorted(set(overrides) - known)}; known: {sorted(known)}"
        )
    if model is not None:
        card_data.update_from_model(model)
    for name, value in overrides.items():
        setattr(card_data, name, value)
    card_data.plots = card_data.plots or find_plots(output_dir)
    if tokenizer is not None and model is not None and card_data.example_predictions is None:
        card_data.example_predictions = model.predict(list(card_data.example_sentences), tokenizer)
    card = render_model_card(card_data)
    card.save(Path(output_dir) / "README.md")
    return card


def write_run_card(trainer, **fields):
    """The card of a `MultiTaskTrainer`'s run, written into its output directory: the card data its
    `ModelCardCallback` gathered (if it has one), the run's tokenizer, and `fields` of RUN_CARD_FIELDS (others and
    None are dropped; `model_id` defaults to the run's `hub_model_id`)."""
    fields = {k: v for k, v in fields.items() if k in RUN_CARD_FIELDS and v is not None}
    if "model_id" not in fields and trainer.args.hub_model_id:
        fields["model_id"] = trainer.args.hub_model_id
    card = next((c for c in trainer.callback_handler.callbacks if isinstance(c, ModelCardCallback)), None)
    return generate_model_card(
        trainer.accelerator.unwrap_model(trainer.model),
        trainer.args.output_dir,
        card_data=card.card_data if card is not None else None,
        tokenizer=trainer.processing_class,
        **fields,
    )


def find_plots(output_dir: str | os.PathLike) -> list[str]:
    """Image files in `output_dir` and its `plots/` folder, as sorted relative POSIX paths."""
    output_dir = Path(output_dir)
    folders = [folder for folder in (output_dir, output_dir / "plots") if folder.is_dir()]
    return sorted(
        path.relative_to(output_dir).as_posix()
        for folder in folders
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in PLOT_EXTENSIONS
    )


# ------------------------------------------------------------------ values the template shows
def _history(card: HydraBertCardData) -> dict | None:
    logs = [row for row in card.training_logs if row.get("step") is not None]
    evals = [row for row in card.eval_history if row.get("step") is not None]
    if not logs and not evals and not card.train_summary:
        return None
    return {
        "steps": max((row["step"] for row in logs + evals), default=None),
        "epochs": max((row["epoch"] for row in logs + evals if row.get("epoch") is not None), default=None),
        "losses": [{"step": row["step"], "loss": row["loss"]} for row in logs if "loss" in row],
        "rates": [row["learning_rate"] for row in logs if "learning_rate" in row],
        "table": _history_table(logs, evals),
    }


def _history_table(logs: list[dict], evals: list[dict]) -> dict | None:
    """One row per step that logged or evaluated (at most `_MAX_HISTORY_ROWS`, evenly thinned)."""
    by_step: dict[int, dict] = {}
    for row in logs + evals:
        entry = by_step.setdefault(row["step"], {"epoch": row.get("epoch")})
        split = row.get("split")
        for key, value in row.items():
            if split is None and key in _LOG_COLUMNS:
                entry[_LOG_COLUMNS[key]] = value
            elif split is not None and key not in ("step", "epoch", "split"):
                entry[f"{split.capitalize()} {key.replace('average_', 'avg ').replace('_', ' ')}"] = value
    steps = sorted(by_step)
    if len(steps) > _MAX_HISTORY_ROWS:  # the last step always kept
        stride = math.ceil(len(steps) / (_MAX_HISTORY_ROWS - 1))
        steps = sorted(set(steps[::stride]) | {steps[-1]})
    columns = list(dict.fromkeys(k for s in steps for k in by_step[s] if k != "epoch"))
    return {"columns": columns, "rows": [(s, by_step[s]) for s in steps]} if steps else None


def _versions() -> dict[str, str]:
    from . import __version__

    packages = {"transformers": "transformers", "PyTorch": "torch", "huggingface_hub": "huggingface_hub"}
    return {
        "Python": platform.python_version(),
        "hydrabert": __version__,
        **{name: importlib.metadata.version(package) for name, package in packages.items()},
    }


# ------------------------------------------------------------------------------------------ helpers
def _is_hub_id(value) -> bool:
    try:  # a local path ("/x", "../x", "x/y/z") fails the Hub's own repo-id check
        return isinstance(value, str) and validate_repo_id(value) is None
    except HFValidationError:
        return False


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value):
    """JSON-friendly, comparable values: enums to their value, tuples to lists, other objects to str."""
    return json.loads(json.dumps(value, default=str))


def _fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    if abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _plural(count, noun: str) -> str:
    return f"{_fmt(count)} {noun}{'' if count == 1 else 's'}"


def _human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit} ({n:,})"
    return str(n)


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _describe_prediction(prediction: dict) -> str:
    """`sentiment: positive (0.981), topic: DESC (0.412)` for one sentence's `predict` output."""
    parts = []
    for task, value in prediction.items():
        label, score = value.get("label"), value.get("score")
        if label is None:  # regression
            shown = _fmt(score) if not isinstance(score, list) else ", ".join(_fmt(s) for s in score)
        elif isinstance(label, list):  # multi-label
            shown = "[" + ", ".join(f"{name} ({_fmt(s)})" for name, s in zip(label, score, strict=True)) + "]"
        else:
            shown = f"{label} ({_fmt(score)})"
        parts.append(f"{task}: {shown}")
    return ", ".join(parts)


__all__ = [
    "RUN_CARD_FIELDS",
    "HydraBertCardData",
    "ModelCardCallback",
    "check_metadata_round_trip",
    "find_plots",
    "generate_model_card",
    "non_default_arguments",
    "render_model_card",
    "write_run_card",
]
