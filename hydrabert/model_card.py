"""Model cards for HydraBERT models: card data, a callback that fills it during training, and rendering.

`ModelCardCallback` records what a run did (`on_train_begin`: the model and the training recipe;
`on_evaluate`/`on_predict`: per-task metrics; `on_log`: loss and learning rate); `generate_model_card`
renders `model_cards/model_card.md` (shipped inside the package) into the output directory's README.md,
with Hub metadata (`model-index` included) built through `huggingface_hub.ModelCardData`.

```python
card_callback = ModelCardCallback(HydraBertCardData(model_id="me/hydrabert-sst2-trec", language="en"))
trainer = MultiTaskTrainer(..., callbacks=[card_callback])
trainer.train()
trainer.evaluate()
generate_model_card(model, args.output_dir, card_data=card_callback.card_data, tokenizer=tokenizer)
```
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import math
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import TrainerCallback

TEMPLATE_PATH = Path(__file__).parent / "model_cards" / "model_card.md"
DEFAULT_TAGS = ["hydrabert", "multi-task", "sentence-embeddings", "text-classification"]
PLOT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".svg", ".gif")
DEFAULT_EXAMPLES = [
    "This movie was a delight from start to finish.",
    "Where can I find the nearest train station?",
]

# The recipe fields that `MultiTaskTrainingArguments` adds to `TrainingArguments`, with their defaults
# (read with getattr, so plain TrainingArguments work too).
RECIPE_DEFAULTS = {
    "layerwise_lr_decay": 1.0,
    "head_learning_rate": None,
    "freeze_policy": "none",
    "frozen_tasks": None,
    "freeze_embeddings": False,
    "freeze_lower_layers": 0,
    "gradual_unfreezing": False,
    "unfreeze_every": None,
    "task_sampling": "proportional",
    "sampling_temperature": None,
    "task_weights": None,
}
# TrainingArguments fields shown in the recipe itself rather than in the hyperparameter table.
_RECIPE_BASE_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "bf16",
    "fp16",
)
# Not hyperparameters: where things go, how they are logged and saved, credentials.
_SKIPPED_ARG_PREFIXES = (
    "output_",
    "overwrite_output",
    "logging_",
    "hub_",
    "push_to_hub",
    "save_",
    "trackio_",
)
_SKIPPED_ARG_NAMES = {
    # resolved in __post_init__ from None/"" defaults (hydrabert sets the two ddp_ ones for DDP);
    # their resolved values are not a user's choice
    "ddp_broadcast_buffers",
    "ddp_find_unused_parameters",
    "accelerator_config",
    "run_name",
    "project",
    "report_to",
    "resume_from_checkpoint",
    "local_rank",
    "disable_tqdm",
    "log_level",
    "log_level_replica",
    "log_on_each_node",
    "do_train",
    "do_eval",
    "do_predict",
}
# Metrics that describe the evaluation run, not the model.
_RUN_METRICS = {
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "jit_compilation_time",
    "model_preparation_time",
}
_SPLIT_NAMES = {"eval": "validation", "test": "test", "train": "train"}
_MAX_LABELS_SHOWN = 12
_MAX_HISTORY_ROWS = 12
_LANGUAGE_CODE = re.compile(r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})*|code|multilingual)$")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class HydraBertCardData:
    """Everything a HydraBERT model card says. Fill it by hand, with `update_from_model`/`update_from_args`,
    or let `ModelCardCallback` fill it during training.

    Args:
        model_id: the Hub repo id used in the usage snippets (`"user/name"`).
        model_name: the card's title and the `model-index` name (default: the repo name).
        base_model: the encoder checkpoint (`model.config.encoder._name_or_path`); only a Hub repo id goes
            into the metadata, a local path is named in the text.
        language, license, tags: Hub metadata (`tags` are added to the default hydrabert tags).
        datasets: `{task: Hub dataset id or local description}`.
        dataset_sizes: `{task: {split: number of examples}}`.
        revision: the commit to pin in the snippets (`"main"` when unknown).
        tasks: `{task: {"labels", "problem_type", "weight", "num_labels"}}` (from `model.config.tasks`).
        architecture: encoder type, layers, hidden size, embedding size, pooling, adapter, parameters.
        training: the multi-task recipe (freezing, LLRD, head learning rate, task sampling, ...).
        hyperparameters: training arguments that differ from `TrainingArguments` defaults.
        results: `{split: {task: {metric: value}}}` (latest evaluation per split).
        average_results: `{split: {metric: value}}` (the `*_average_*` metrics).
        eval_history: one row per evaluation: step, epoch, split and the split-level metrics.
        training_logs: one row per logging step: step, epoch, loss, learning rate(s).
        train_summary: the end-of-training numbers (`train_runtime`, `train_loss`, ...).
        plots: image files (relative to the output directory); found there when empty.
        example_sentences, example_predictions: for the usage snippet.
    """

    model_id: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)
    dataset_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
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
    example_sentences: list[str] = field(default_factory=lambda: list(DEFAULT_EXAMPLES))
    example_predictions: list[dict] | None = None

    # ------------------------------------------------------------------------------------ filling
    def update_from_model(self, model) -> None:
        """Tasks, architecture facts and (unless already set) the base model, from a `HydraBertModel`."""
        config = model.config
        encoder = config.encoder
        self.tasks = {
            name: {k: spec[k] for k in ("num_labels", "labels", "problem_type", "weight") if k in spec}
            for name, spec in config.tasks.items()
        }
        self.architecture = {
            "encoder_type": getattr(encoder, "model_type", None),
            "num_layers": getattr(encoder, "num_hidden_layers", None),
            "hidden_size": getattr(encoder, "hidden_size", None),
            "max_position_embeddings": getattr(encoder, "max_position_embeddings", None),
            "embedding_dim": config.embedding_dim,
            "pooling": config.pooling,
            "embedding_activation": getattr(config, "embedding_activation", None),
            "adapter_size": config.adapter_size,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
        if self.base_model is None:
            self.base_model = getattr(encoder, "_name_or_path", None) or None

    def update_from_args(self, args) -> None:
        """The training recipe and the non-default hyperparameters, from (MultiTask)TrainingArguments."""
        recipe = {name: _plain(getattr(args, name, default)) for name, default in RECIPE_DEFAULTS.items()}
        for name in _RECIPE_BASE_FIELDS:
            recipe[name] = _plain(getattr(args, name, None))
        recipe["world_size"] = getattr(args, "world_size", 1)
        self.training = recipe
        self.hyperparameters = non_default_arguments(
            args, exclude=set(RECIPE_DEFAULTS) | set(_RECIPE_BASE_FIELDS)
        )

    def add_metrics(
        self,
        metrics: dict[str, float],
        step: int | None = None,
        epoch: float | None = None,
        history: bool = True,
    ) -> None:
        """Sort `{prefix}_{task}_{metric}` / `{prefix}_average_{metric}` / `{prefix}_{metric}` keys into
        per-split, per-task results (the latest evaluation of a split wins) and, with `history`, a row of
        the evaluation history. Prefixes `eval` and `test` become the splits `validation` and `test`."""
        tasks = sorted(self.tasks, key=len, reverse=True)  # longest first: "topic_fine" before "topic"
        history_rows: dict[str, dict] = {}
        for key, value in metrics.items():
            if "_" not in key or not _is_number(value):
                continue
            prefix, rest = key.split("_", 1)
            split = _SPLIT_NAMES.get(prefix, prefix)
            value = float(value)
            task = next((t for t in tasks if rest.startswith(t + "_")), None)
            if task is not None:
                metric = rest[len(task) + 1 :]
                if metric not in _RUN_METRICS:
                    self.results.setdefault(split, {}).setdefault(task, {})[metric] = value
                continue
            row = history_rows.setdefault(split, {"step": step, "epoch": epoch, "split": split})
            if rest.startswith("average_"):
                self.average_results.setdefault(split, {})[rest[len("average_") :]] = value
                row[rest] = value
            elif rest not in _RUN_METRICS:
                row[rest] = value
        if history:
            self.eval_history.extend(row for row in history_rows.values() if len(row) > 3)

    def add_log(self, logs: dict[str, float], step: int | None = None, epoch: float | None = None) -> None:
        """Keep the training loss and learning rate(s) of a logging step, and the end-of-training summary."""
        if any(k.startswith("train_") for k in logs):
            self.train_summary.update({k: float(v) for k, v in logs.items() if _is_number(v)})
            return
        row = {
            k: float(v)
            for k, v in logs.items()
            if _is_number(v) and (k in ("loss", "grad_norm") or k.startswith(("learning_rate", "lr")))
        }
        if row:
            self.training_logs.append({"step": step, "epoch": epoch, **row})

    # ---------------------------------------------------------------------------------- metadata
    @property
    def name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.model_id:
            return self.model_id.split("/")[-1]
        return "hydrabert-model"

    def hub_base_model(self) -> str | None:
        return self.base_model if _is_hub_id(self.base_model) else None

    def hub_datasets(self) -> dict[str, str]:
        return {task: ds for task, ds in self.datasets.items() if _is_hub_id(ds)}

    def eval_results(self) -> list[EvalResult]:
        """One `EvalResult` per (split, task, metric): task type text-classification; the dataset is the
        task's Hub dataset when known, else the task name."""
        hub = self.hub_datasets()
        out = []
        for split, per_task in self.results.items():
            for task, metrics in per_task.items():
                dataset = hub.get(task, task)
                for metric, value in metrics.items():
                    out.append(
                        EvalResult(
                            task_type="text-classification",
                            task_name=task,
                            dataset_type=dataset,
                            dataset_name=task if dataset == task else f"{task} ({dataset})",
                            dataset_split=split,
                            metric_type=metric,
                            metric_name=f"{task} {metric} ({split})",
                            metric_value=round(value, 4),
                        )
                    )
        return out

    def to_model_card_data(self) -> ModelCardData:
        metrics = sorted({m for per_task in self.results.values() for ms in per_task.values() for m in ms})
        datasets = list(dict.fromkeys(self.hub_datasets().values()))
        eval_results = self.eval_results()
        return ModelCardData(
            language=self.language,
            license=self.license,
            library_name="transformers",
            tags=list(dict.fromkeys(DEFAULT_TAGS + list(self.tags))),
            base_model=self.hub_base_model(),
            datasets=datasets or None,
            metrics=metrics or None,
            pipeline_tag="text-classification",
            model_name=self.name if eval_results else None,
            eval_results=eval_results or None,
        )


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

    def _see_model(self, model, refresh: bool = False) -> None:
        # The task names are needed to read metric keys; evaluate() may run before (or without) train().
        tasks = getattr(getattr(model, "config", None), "tasks", None)
        if isinstance(tasks, dict) and (refresh or not self.card_data.tasks):
            self.card_data.update_from_model(model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.card_data.add_log(logs, step=state.global_step, epoch=state.epoch)


# ------------------------------------------------------------------------------------ hyperparameters
def non_default_arguments(args, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields of a TrainingArguments dataclass whose value differs from the declared default, without
    paths, logging, saving, Hub and credential settings.

    Declared defaults, not a fresh default instance: building TrainingArguments during training resets
    accelerate's global state and breaks the running Trainer."""
    diff = {}
    for f in dataclasses.fields(args):
        name = f.name
        if (
            not f.init
            or name.startswith("_")
            or name in exclude
            or name in _SKIPPED_ARG_NAMES
            or name.startswith(_SKIPPED_ARG_PREFIXES)
            or "token" in name
            or name.endswith("_dir")
        ):
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
def render_model_card(card_data: HydraBertCardData, template_path: str | os.PathLike | None = None) -> str:
    """The README.md text (YAML metadata + Markdown body) for `card_data`. Sections with nothing to say
    are left out, with their headings."""
    template = Path(template_path or TEMPLATE_PATH).read_text(encoding="utf-8")
    metadata = card_data.to_model_card_data().to_yaml()
    values = {
        "metadata": metadata,
        "model_name": card_data.name,
        "summary": _render_summary(card_data),
        "architecture": _render_architecture(card_data),
        "tasks_table": _render_tasks(card_data),
        "usage": _render_usage(card_data),
        "datasets": _render_datasets(card_data),
        "recipe": _render_recipe(card_data),
        "hyperparameters": _render_hyperparameters(card_data),
        "history": _render_history(card_data),
        "results": _render_results(card_data),
        "plots": _render_plots(card_data),
        "limitations": _render_limitations(card_data),
        "versions": _render_versions(),
    }

    def substitute(match):
        name = match.group(1)
        if name not in values:
            raise KeyError(f"{template_path or TEMPLATE_PATH}: unknown placeholder {{{{ {name} }}}}")
        return values[name].strip("\n")

    text = _PLACEHOLDER.sub(substitute, template)
    return _tidy(_drop_empty_sections(text))


def generate_model_card(
    model,
    output_dir: str | os.PathLike,
    card_data: HydraBertCardData | None = None,
    tokenizer=None,
    **overrides,
) -> ModelCard:
    """Write `output_dir/README.md` for `model` and return it as a `huggingface_hub.ModelCard`.

    `card_data` (e.g. `ModelCardCallback.card_data`) is copied, not changed; the model refreshes tasks and
    architecture; `overrides` set card-data fields (`model_id=`, `revision=`, `language=`, `datasets=`...).
    With a `tokenizer`, the usage snippet shows the model's real predictions for the example sentences.
    The metadata is checked offline with `validate_model_card_metadata` before anything is written.
    """
    card_data = copy.deepcopy(card_data) if card_data is not None else HydraBertCardData()
    field_names = {f.name for f in dataclasses.fields(HydraBertCardData)}
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise TypeError(f"Unknown model-card field(s) {unknown}; known fields: {sorted(field_names)}")
    if model is not None:
        card_data.update_from_model(model)
    for name, value in overrides.items():
        setattr(card_data, name, value)
    output_dir = Path(output_dir)
    if not card_data.plots:
        card_data.plots = find_plots(output_dir)
    if tokenizer is not None and model is not None and card_data.example_predictions is None:
        card_data.example_predictions = model.predict(list(card_data.example_sentences), tokenizer)
    card = ModelCard(render_model_card(card_data))
    validate_model_card_metadata(str(card))
    output_dir.mkdir(parents=True, exist_ok=True)
    card.save(output_dir / "README.md")
    return card


def find_plots(output_dir: str | os.PathLike) -> list[str]:
    """Image files in `output_dir` and its `plots/` folder, as sorted relative POSIX paths."""
    output_dir = Path(output_dir)
    found = []
    for folder in (output_dir, output_dir / "plots"):
        if folder.is_dir():
            found += [
                p.relative_to(output_dir).as_posix()
                for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in PLOT_EXTENSIONS
            ]
    return sorted(found)


def validate_model_card_metadata(content: str) -> dict:
    """Check a card's YAML metadata offline, the way the Hub would reject it (`ModelCard.validate()` needs
    the network): a mapping; `model-index` that `huggingface_hub` parses into complete `EvalResult`s and
    writes back unchanged; numeric metric values; repo ids for `base_model`/`datasets`; language codes;
    list-of-string tags. Returns the metadata; raises `ValueError` listing every problem."""
    match = REGEX_YAML_BLOCK.search(content)
    if match is None:
        raise ValueError("Invalid model card metadata: no YAML block between '---' lines at the top")
    try:
        metadata = yaml.safe_load(match.group(2)) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"Invalid model card metadata: YAML does not parse: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError(f"Invalid model card metadata: a mapping is needed, got {type(metadata).__name__}")
    problems = []
    try:
        if ModelCardData(**copy.deepcopy(metadata)).to_dict() != metadata:
            problems.append("metadata does not round-trip through huggingface_hub.ModelCardData")
    except (ValueError, TypeError) as error:
        problems.append(f"huggingface_hub.ModelCardData rejects the metadata: {error}")
    model_index = metadata.get("model-index")
    if model_index is not None:
        try:
            name, results = model_index_to_eval_results(model_index)
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"model-index does not parse: {error!r}")
        else:
            if eval_results_to_model_index(name, results) != model_index:
                problems.append("model-index does not round-trip through huggingface_hub.EvalResult")
            for result in results:
                for required in ("task_type", "dataset_type", "dataset_name", "metric_type"):
                    if not isinstance(getattr(result, required), str) or not getattr(result, required):
                        problems.append(f"model-index: {required} must be a non-empty string in {result}")
                if not _is_number(result.metric_value) or not math.isfinite(result.metric_value):
                    problems.append(
                        f"model-index: metric value {result.metric_value!r} is not a finite number"
                    )
    for key in ("base_model", "datasets"):
        values = metadata.get(key)
        for value in [values] if isinstance(values, str) else values or []:
            if not _is_hub_id(value):
                problems.append(f"{key}: {value!r} is not a Hub repo id")
    languages = metadata.get("language")
    for code in [languages] if isinstance(languages, str) else languages or []:
        if not isinstance(code, str) or not _LANGUAGE_CODE.match(code):
            problems.append(f"language: {code!r} is not an ISO 639 code")
    tags = metadata.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        problems.append(f"tags must be a list of strings, got {tags!r}")
    for key in ("license", "library_name", "pipeline_tag"):
        value = metadata.get(key)
        if value is not None and (
            not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value)
        ):
            problems.append(f"{key}: {value!r} is not a lower-case identifier")
    if problems:
        raise ValueError("Invalid model card metadata:\n- " + "\n- ".join(problems))
    return metadata


# ---------------------------------------------------------------------------------------- sections
def _render_summary(card: HydraBertCardData) -> str:
    arch, tasks = card.architecture, list(card.tasks)
    encoder = f"{arch['encoder_type']} encoder" if arch.get("encoder_type") else "BERT-family encoder"
    base = card.hub_base_model()
    if base:
        origin = f", fine-tuned from [{base}](https://huggingface.co/{base}),"
    elif card.base_model:
        origin = f", fine-tuned from `{card.base_model}`,"
    else:
        origin = ""
    if tasks:
        heads = (
            f"{len(tasks)} task head{'s' if len(tasks) != 1 else ''} ({', '.join(f'`{t}`' for t in tasks)})"
        )
    else:
        heads = "task heads"
    dim = (
        f"a {arch['embedding_dim']}-dimensional sentence embedding"
        if arch.get("embedding_dim")
        else "a sentence embedding"
    )
    return (
        f"A multi-task HydraBERT model: one {encoder}{origin} shared by "
        f"{heads}. One forward pass gives {dim} and a prediction for every task."
    )


def _render_architecture(card: HydraBertCardData) -> str:
    arch = card.architecture
    if not arch:
        return ""
    lines = []
    if arch.get("encoder_type"):
        layers = f", {arch['num_layers']} layers" if arch.get("num_layers") else ""
        hidden = f", hidden size {arch['hidden_size']}" if arch.get("hidden_size") else ""
        lines.append(f"- **Encoder**: `{arch['encoder_type']}`{layers}{hidden}")
    if card.base_model:
        base = card.hub_base_model()
        lines.append(
            f"- **Base model**: [{base}](https://huggingface.co/{base})"
            if base
            else f"- **Base model**: `{card.base_model}` (local)"
        )
    if arch.get("embedding_dim"):
        pooling = {"cls": "h_[CLS]", "mean": "masked mean of the token states"}.get(arch.get("pooling"), "")
        activation = "tanh" if arch.get("embedding_activation", "tanh") == "tanh" else ""
        how = f"{activation}(Linear({pooling}))" if activation else f"Linear({pooling})"
        lines.append(f"- **Sentence embedding**: {arch['embedding_dim']} dimensions, `{how}`")
    if arch.get("adapter_size"):
        lines.append(
            f"- **Adapter**: residual bottleneck of width {arch['adapter_size']} between embedding and heads"
        )
    elif "adapter_size" in arch:
        lines.append("- **Adapter**: none")
    if arch.get("max_position_embeddings"):
        lines.append(f"- **Maximum sequence length**: {arch['max_position_embeddings']} tokens")
    if arch.get("num_parameters"):
        lines.append(f"- **Parameters**: {_human_count(arch['num_parameters'])}")
    return "\n".join(lines)


def _render_tasks(card: HydraBertCardData) -> str:
    if not card.tasks:
        return ""
    rows = ["| Task | Type | Labels | Loss weight |", "| --- | --- | --- | --- |"]
    for name, spec in card.tasks.items():
        problem = spec.get("problem_type", "single_label_classification")
        kind = {
            "single_label_classification": "single-label",
            "multi_label_classification": "multi-label",
            "regression": "regression",
        }.get(problem, problem)
        labels = list(spec.get("labels") or [])
        if problem == "regression":
            shown = "-"
        else:
            shown = ", ".join(f"`{_cell(label)}`" for label in labels[:_MAX_LABELS_SHOWN])
            if len(labels) > _MAX_LABELS_SHOWN:
                shown += f", ... ({len(labels)} labels)"
        rows.append(f"| `{name}` | {kind} | {shown} | {_fmt(spec.get('weight', 1.0))} |")
    return "\n".join(rows)


def _render_usage(card: HydraBertCardData) -> str:
    repo_id = card.model_id or f"your-username/{card.name}"
    revision = card.revision or "main"
    sentences = list(card.example_sentences) or list(DEFAULT_EXAMPLES)
    first_task = next(iter(card.tasks), None)
    predictions = card.example_predictions
    prediction_comment = ""
    if predictions:
        prediction_comment = "\n".join(f"# {_describe_prediction(p)}" for p in predictions) + "\n"
    sentence_list = "[" + ", ".join(json.dumps(s, ensure_ascii=False) for s in sentences) + "]"
    dim = card.architecture.get("embedding_dim", "embedding_dim")
    restrict = f"tasks=[{json.dumps(first_task)}]" if first_task else "tasks=[...]"
    return (
        "The model's code travels with its weights, so loading it needs `trust_remote_code=True`; pin "
        "`revision` to the commit you have reviewed.\n\n"
        "```python\n"
        "from transformers import AutoModel, AutoTokenizer\n\n"
        f"repo_id = {json.dumps(repo_id)}\n"
        f"revision = {json.dumps(revision)}  # pin the commit whose code you have read\n"
        "model = AutoModel.from_pretrained(repo_id, trust_remote_code=True, revision=revision)\n"
        "tokenizer = AutoTokenizer.from_pretrained(repo_id, revision=revision)\n\n"
        f"sentences = {sentence_list}\n"
        "predictions = model.predict(sentences, tokenizer)  # per sentence: task -> label and score\n"
        f"{prediction_comment}"
        f"embeddings = model.encode(sentences, tokenizer, normalize=True)  # shape ({len(sentences)}, {dim})\n"
        "```\n\n"
        "Or as a `transformers` pipeline (the pipeline file is in the repository too):\n\n"
        "```python\n"
        "from transformers import pipeline\n\n"
        f"classifier = pipeline(model={json.dumps(repo_id)}, trust_remote_code=True, revision={json.dumps(revision)})\n"
        f"classifier({json.dumps(sentences[0], ensure_ascii=False)})  # every task's label and score\n"
        f"classifier(sentences, {restrict}, top_k=2)  # some tasks, the two best labels each\n"
        "```"
    )


def _render_datasets(card: HydraBertCardData) -> str:
    tasks = [
        t
        for t in dict.fromkeys(list(card.tasks) + list(card.datasets))
        if t in card.datasets or t in card.dataset_sizes
    ]
    if not tasks:
        return ""
    splits = sorted({s for sizes in card.dataset_sizes.values() for s in sizes})
    header = "| Task | Dataset |" + "".join(f" {s} examples |" for s in splits)
    rows = [header, "|" + " --- |" * (2 + len(splits))]
    for task in tasks:
        dataset = card.datasets.get(task)
        if dataset and _is_hub_id(dataset):
            shown = f"[{dataset}](https://huggingface.co/datasets/{dataset})"
        else:
            shown = f"`{_cell(dataset)}` (local files)" if dataset else "-"
        sizes = card.dataset_sizes.get(task, {})
        rows.append(f"| `{task}` | {shown} |" + "".join(f" {sizes.get(s, '-')} |" for s in splits))
    return "\n".join(rows)


def _render_recipe(card: HydraBertCardData) -> str:
    t = card.training
    if not t and not card.hyperparameters and not card.training_logs and not card.train_summary:
        return ""
    lines = [
        "Trained with hydrabert's `MultiTaskTrainer`: one shared encoder, every task head computed on every "
        "batch, each task's loss averaged over its rows and weighted."
    ]
    if not t:
        return lines[0]
    lines.append("")
    lr = t.get("learning_rate")
    decay = t.get("layerwise_lr_decay", 1.0)
    num_layers = card.architecture.get("num_layers")
    if decay is not None and decay != 1.0:
        depth = f" (L = {num_layers})" if num_layers else ""
        lines.append(
            f"- **Layer-wise learning-rate decay**: ξ = {_fmt(decay)}; encoder layer k of L trains at "
            f"lr·ξ^(L−k), the embeddings at lr·ξ^L{depth}, with lr = {_fmt(lr)}"
        )
    else:
        lines.append(f"- **Learning rate**: {_fmt(lr)} for the whole encoder (no layer-wise decay)")
    head_lr = t.get("head_learning_rate")
    lines.append(
        f"- **Head learning rate** (projection, adapter, heads): {_fmt(head_lr) if head_lr is not None else f'{_fmt(lr)} (same as the encoder)'}"
    )
    freezing = [f"policy `{t.get('freeze_policy') or 'none'}`"]
    if t.get("frozen_tasks"):
        freezing.append("frozen heads: " + ", ".join(f"`{x}`" for x in t["frozen_tasks"]))
    if t.get("freeze_embeddings"):
        freezing.append("embeddings frozen")
    if t.get("freeze_lower_layers"):
        freezing.append(f"lowest {_plural(t['freeze_lower_layers'], 'encoder layer')} frozen")
    lines.append("- **Freezing**: " + "; ".join(freezing))
    if t.get("gradual_unfreezing"):
        every = t.get("unfreeze_every")
        lines.append(
            "- **Gradual unfreezing** (ULMFiT): the encoder starts frozen and one more layer from the top "
            f"unfreezes every {_fmt(every) if every is not None else '?'} epochs"
        )
    sampling = t.get("task_sampling") or "proportional"
    temperature = (
        f" (T = {_fmt(t['sampling_temperature'])})"
        if sampling == "temperature" and t.get("sampling_temperature") is not None
        else ""
    )
    lines.append(f"- **Task sampling**: `{sampling}`{temperature}")
    weights = t.get("task_weights") or {name: spec.get("weight", 1.0) for name, spec in card.tasks.items()}
    if weights:
        lines.append("- **Task loss weights**: " + ", ".join(f"`{k}` {_fmt(v)}" for k, v in weights.items()))
    batch = t.get("per_device_train_batch_size")
    if batch:
        accumulation = t.get("gradient_accumulation_steps") or 1
        world = t.get("world_size") or 1
        lines.append(
            f"- **Batch size**: {batch} per device × {accumulation} accumulation step(s) × {world} process(es) "
            f"= {batch * accumulation * world}"
        )
    if t.get("max_steps") and t["max_steps"] > 0:
        lines.append(f"- **Length**: {t['max_steps']} steps")
    elif t.get("num_train_epochs") is not None:
        lines.append(f"- **Length**: {_plural(t['num_train_epochs'], 'epoch')}")
    precision = "bf16" if t.get("bf16") else "fp16" if t.get("fp16") else "fp32"
    seed = f", seed {t['seed']}" if t.get("seed") is not None else ""
    lines.append(f"- **Precision**: {precision}{seed}")
    return "\n".join(lines)


def _render_hyperparameters(card: HydraBertCardData) -> str:
    if not card.hyperparameters:
        return ""
    rows = [
        "Training arguments that differ from the `transformers.TrainingArguments` defaults:",
        "",
        "| Argument | Value |",
        "| --- | --- |",
    ]
    rows += [
        f"| `{k}` | `{_cell(json.dumps(v, default=str))}` |" for k, v in sorted(card.hyperparameters.items())
    ]
    return "\n".join(rows)


def _render_history(card: HydraBertCardData) -> str:
    logs = [row for row in card.training_logs if row.get("step") is not None]
    summary = card.train_summary
    if not logs and not summary and not card.eval_history:
        return ""
    lines = []
    steps = [row["step"] for row in logs] + [
        row["step"] for row in card.eval_history if row.get("step") is not None
    ]
    epochs = [row["epoch"] for row in logs + card.eval_history if row.get("epoch") is not None]
    if steps:
        span = f"{max(steps)} steps" + (f" ({_fmt(max(epochs))} epochs)" if epochs else "")
        runtime = f" in {_duration(summary['train_runtime'])}" if "train_runtime" in summary else ""
        lines.append(f"- **Length**: {span}{runtime}")
    losses = [(row["step"], row["loss"]) for row in logs if "loss" in row]
    if losses:
        best = min(losses, key=lambda item: item[1])
        lines.append(
            f"- **Training loss**: {_fmt(losses[0][1])} at step {losses[0][0]} → {_fmt(losses[-1][1])} at step "
            f"{losses[-1][0]} (lowest {_fmt(best[1])} at step {best[0]})"
        )
    if "train_loss" in summary:
        lines.append(f"- **Mean training loss over the run**: {_fmt(summary['train_loss'])}")
    rates = [row["learning_rate"] for row in logs if "learning_rate" in row]
    if rates:
        lines.append(f"- **Learning rate**: peak {_fmt(max(rates))}, final {_fmt(rates[-1])}")
    table = _history_table(logs, card.eval_history)
    if table:
        lines += ["", table]
    return "\n".join(lines)


def _history_table(logs: list[dict], eval_history: list[dict]) -> str:
    by_step: dict[int, dict] = {}
    for row in logs:
        entry = by_step.setdefault(row["step"], {"epoch": row.get("epoch")})
        if "loss" in row:
            entry["Training loss"] = row["loss"]
        if "learning_rate" in row:
            entry["Learning rate"] = row["learning_rate"]
    for row in eval_history:
        if row.get("step") is None:
            continue
        entry = by_step.setdefault(row["step"], {"epoch": row.get("epoch")})
        split = row["split"].capitalize()
        for key, value in row.items():
            if key in ("step", "epoch", "split"):
                continue
            entry[f"{split} {key.replace('average_', 'avg ').replace('_', ' ')}"] = value
    if not by_step:
        return ""
    steps = sorted(by_step)
    if len(steps) > _MAX_HISTORY_ROWS:  # evenly thinned, the last step always kept
        stride = math.ceil(len(steps) / (_MAX_HISTORY_ROWS - 1))
        steps = sorted(set(steps[::stride]) | {steps[-1]})
    columns = list(dict.fromkeys(k for s in steps for k in by_step[s] if k != "epoch"))
    rows = ["| Step | Epoch | " + " | ".join(columns) + " |", "|" + " --- |" * (2 + len(columns))]
    for s in steps:
        entry = by_step[s]
        epoch = _fmt(entry["epoch"]) if entry.get("epoch") is not None else "-"
        cells = [_fmt(entry[c]) if c in entry else "-" for c in columns]
        rows.append(f"| {s} | {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _render_results(card: HydraBertCardData) -> str:
    blocks = []
    splits = list(dict.fromkeys(list(card.results) + list(card.average_results)))
    for split in splits:
        per_task = card.results.get(split, {})
        average = card.average_results.get(split, {})
        metrics = list(dict.fromkeys([m for ms in per_task.values() for m in ms] + list(average)))
        if not metrics:
            continue
        rows = [
            f"**{split.capitalize()}** split:",
            "",
            "| Task | " + " | ".join(metrics) + " |",
            "|" + " --- |" * (1 + len(metrics)),
        ]
        for task, values in per_task.items():
            rows.append(
                f"| `{task}` | " + " | ".join(_fmt(values[m]) if m in values else "-" for m in metrics) + " |"
            )
        if average:
            rows.append(
                "| **average** | "
                + " | ".join(_fmt(average[m]) if m in average else "-" for m in metrics)
                + " |"
            )
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def _render_plots(card: HydraBertCardData) -> str:
    blocks = []
    for plot in card.plots:
        title = Path(plot).stem.replace("_", " ").replace("-", " ").strip().capitalize()
        blocks.append(f"![{title}]({plot})")
    return "\n\n".join(blocks)


def _render_limitations(card: HydraBertCardData) -> str:
    lines = [
        "- Scores are softmax (single-label) or sigmoid (multi-label) outputs of the heads: they rank labels "
        "but are not calibrated probabilities.",
        "- Every task shares one encoder: a task can gain from the others or lose to them (negative transfer); "
        "compare with single-task baselines before relying on one head.",
        "- Each head only knows its own label set and the text its training data covered; inputs far from "
        "that domain get confident-looking but unreliable labels.",
    ]
    max_len = card.architecture.get("max_position_embeddings")
    if max_len:
        lines.append(f"- Inputs longer than {max_len} tokens are truncated.")
    if card.language:
        languages = card.language if isinstance(card.language, str) else ", ".join(card.language)
        lines.append(f"- Trained on `{languages}` text; other languages are untested.")
    lines.append(
        "- Loading runs the repository's Python code (`trust_remote_code=True`): review it and pin `revision`."
    )
    return "\n".join(lines)


def _render_versions() -> str:
    import huggingface_hub
    import torch
    import transformers

    from . import __version__

    return "\n".join(
        [
            f"- Python: {platform.python_version()}",
            f"- hydrabert: {__version__}",
            f"- transformers: {transformers.__version__}",
            f"- PyTorch: {torch.__version__}",
            f"- huggingface_hub: {huggingface_hub.__version__}",
        ]
    )


# ------------------------------------------------------------------------------------------ helpers
_HEADING = re.compile(r"^(#{1,6})\s")


def _drop_empty_sections(text: str) -> str:
    """Remove every Markdown heading whose section (up to the next heading of the same or a higher level)
    holds nothing but blank lines and removed subsections. Headings inside code fences are text."""
    lines = text.split("\n")
    headings = []  # (line index, level)
    in_fence = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (match := _HEADING.match(line)):
            headings.append((i, len(match.group(1))))
    drop: set[int] = set()
    # Innermost first: a parent is empty only if its own lines are blank and its children were dropped.
    for position in range(len(headings) - 1, -1, -1):
        start, level = headings[position]
        end = len(lines)
        for later_start, later_level in headings[position + 1 :]:
            if later_level <= level:
                end = later_start
                break
        body = [j for j in range(start + 1, end) if j not in drop]
        if all(not lines[j].strip() for j in body):
            drop.update(range(start, end))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


def _tidy(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def _is_hub_id(value) -> bool:
    if not isinstance(value, str) or not value or value.startswith((".", "/", "~")) or os.path.isabs(value):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value):
    """JSON-friendly, comparable values: enums to their value, tuples to lists, other objects to str."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    return str(value)


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
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _cell(value) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


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
    "HydraBertCardData",
    "ModelCardCallback",
    "find_plots",
    "generate_model_card",
    "non_default_arguments",
    "render_model_card",
    "validate_model_card_metadata",
]
