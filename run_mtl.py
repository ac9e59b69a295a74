#!/usr/bin/env python
"""Train one BERT-family encoder on several sentence tasks at once.

    python run_mtl.py configs/demo.json                        # one process (CPU or one GPU)
    accelerate launch run_mtl.py configs/demo.json             # many GPUs (DDP)
    accelerate launch --multi_gpu --num_processes 2 run_mtl.py configs/demo.json --use_cpu true  # 2 CPU procs
    python run_mtl.py configs/demo.json --data_root /data --max_train_samples 200   # JSON + flag overrides

Arguments are `ModelArguments`, `DataArguments` and `RunTrainingArguments` (`MultiTaskTrainingArguments`
plus `overwrite_output_dir`; see `python run_mtl.py --help`), given as flags or as one JSON file whose keys
are argument names (flags after the file override it). Follows transformers' run_glue.py: set_seed first,
`main_process_first` around data loading, resume from the last checkpoint (a finished run is left alone
unless `--overwrite_output_dir true`), metrics and a model card at the end, push_to_hub when asked. The
script orchestrates; model assembly lives in `hydrabert.assembly`, resume decisions in
`hydrabert.checkpoints`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field

import datasets
import huggingface_hub
import transformers
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from hydrabert.assembly import load_model, resolve_checkpoint
from hydrabert.checkpoints import ResumePlan, plan_resume
from hydrabert.data import (
    HydraBertDataError,
    TaskDataConfig,
    label_counts,
    label_tasks,
    load_tasks,
    source_groups,
    tokenize_task,
)
from hydrabert.data.streaming import (
    is_stream,
    tokenize_stream,
)
from hydrabert.engines import leave_process_group
from hydrabert.export.deploy import plan_exports, push_exports, write_exports
from hydrabert.freezing import check_something_trains, frozen_by_arguments
from hydrabert.modeling_hydrabert import CONFIG_SETTINGS, HydraBertModel
from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

logger = logging.getLogger("run_mtl")


@dataclass
class ModelArguments:
    """The checkpoint to start from, and the `HydraBertConfig` settings of a new model (fields named as
    the config's, `CONFIG_SETTINGS`; None keeps the config's default)."""

    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Encoder checkpoint (any BERT-family model: Hub name or local folder), or a trained hydrabert "
            "model (local folder or Hub repo id) to continue from with its heads (tasks it lacks get new heads)."
        },
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    model_revision: str = field(
        default="main",
        metadata={"help": "Branch, tag or commit of the checkpoint, for its config, weights and tokenizer."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloads."})
    embedding_dim: int | None = field(
        default=None, metadata={"help": "Sentence embedding size (default hidden)."}
    )
    pooling: str | None = field(
        default=None, metadata={"help": "'cls' (tanh(Linear(h_CLS)), the default) or 'mean'."}
    )
    embedding_activation: str | None = field(
        default=None, metadata={"help": "After the embedding projection: 'tanh' (default) or 'identity'."}
    )
    head_input: str | None = field(
        default=None,
        metadata={
            "help": "What the heads read: 'embedding' (default) or 'embedding+cls' (the embedding beside "
            "tanh(h_CLS): the heads bend the embedding less; docs/embeddings.md)."
        },
    )
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before the heads."})
    adapter_size: int | None = field(
        default=None,
        metadata={"help": "Width of a domain-adaptation bottleneck before the heads (None = off)."},
    )
    export: str | None = field(
        default=None,
        metadata={
            "help": "Also write copies that need no remote code (pip install 'hydrabert[export]'): 'all' or a "
            "comma-separated subset of 'task', 'sentence_transformer', 'onnx'. ONNX goes to output_dir/onnx/, the "
            "others beside output_dir; with push_to_hub, each standard model to its own repo (docs/deploy.md)."
        },
    )

    def config_settings(self) -> dict:
        return {name: getattr(self, name) for name in CONFIG_SETTINGS}


@dataclass
class RunTrainingArguments(MultiTaskTrainingArguments):
    """`MultiTaskTrainingArguments` plus what transformers 5 dropped from `TrainingArguments` and this
    script still decides: whether an existing run in `output_dir` may be replaced."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a fresh run in an output_dir that holds one (its checkpoints are removed; its model, "
            "results and card are replaced). Without it an unfinished run resumes and a finished one is left "
            "alone."
        },
    )


@dataclass
class DataArguments:
    tasks: list | str | None = field(
        default=None,
        metadata={
            "help": "The tasks: a JSON list of task objects (keys name, data_dir or dataset_name, train_file, ..., "
            "labels, class_weights: every key, its default and the rules in docs/task-config.md) or the path of a "
            "JSON file holding that list."
        },
    )
    data_root: str | None = field(
        default="../shared/data",
        metadata={"help": "Relative task data_dir values are resolved against this folder."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer sentences are truncated."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Per task (a shared source: per source, rows): keep this many (quick runs)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Per task, validation rows kept."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Per task, test rows kept."})
    tokenized_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache tokenized data here (reused when data and tokenizer are unchanged)."},
    )


def parse_args(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataArguments, RunTrainingArguments))
    _accept_auto(parser, "bf16")
    if argv and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"Config file {argv[0]!r} not found")
        with open(argv[0], encoding="utf-8") as handle:
            config = json.load(handle)
        known = {f.name for kind in parser.dataclass_types for f in dataclasses.fields(kind) if f.init}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown argument(s) {unknown}; see python run_mtl.py --help")
        # JSON values become defaults; flags after the file override them.
        parser.set_defaults(**config)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


def _accept_auto(parser: HfArgumentParser, dest: str) -> None:
    """Lets a boolean flag also take "auto" (`--bf16 auto`, or `"bf16": "auto"` in a config), which
    MultiTaskTrainingArguments resolves from the hardware. HfArgumentParser types a bool field with
    `string_to_bool` and offers no hook for a third value, so the action's type is wrapped here."""
    for action in parser._actions:
        if action.dest == dest:
            to_bool = action.type
            action.type = lambda value, to_bool=to_bool: (
                "auto" if str(value).lower() == "auto" else to_bool(value)
            )


def task_configs(data_args: DataArguments) -> list[TaskDataConfig]:
    tasks = data_args.tasks
    if isinstance(tasks, str):
        if os.path.isfile(tasks):
            with open(tasks, encoding="utf-8") as handle:
                tasks = json.load(handle)
        else:
            try:
                tasks = json.loads(tasks)
            except json.JSONDecodeError as err:
                raise ValueError(f"--tasks is neither a JSON file nor a JSON list: {err}") from None
    if not tasks or not isinstance(tasks, list):
        raise ValueError(
            "No tasks: give `tasks`, a list of task objects (name, data source, columns, labels)"
        )
    configs = []
    for spec in tasks:
        spec = dict(spec)
        data_dir = spec.get("data_dir")
        if data_dir and data_args.data_root and not os.path.isabs(data_dir):
            spec["data_dir"] = os.path.join(data_args.data_root, data_dir)
        configs.append(TaskDataConfig.from_dict(spec))
    return configs


def build_model(model_args: ModelArguments, task_specs: dict[str, dict]) -> HydraBertModel:
    return load_model(
        model_args.model_name_or_path,
        task_specs,
        revision=model_args.model_revision,
        cache_dir=model_args.cache_dir,
        **model_args.config_settings(),
    )


def load_tokenizer(model_args: ModelArguments):
    return AutoTokenizer.from_pretrained(
        resolve_checkpoint(model_args.tokenizer_name or model_args.model_name_or_path),
        revision=model_args.model_revision,
        cache_dir=model_args.cache_dir,
    )


def max_sequence_length(requested: int, tokenizer, model: HydraBertModel) -> int:
    """`requested`, or the longest input that tokenizer and encoder take when it is longer (as run_glue.py
    does, with a warning)."""
    limits = {
        "the tokenizer's model_max_length": tokenizer.model_max_length,
        "the encoder's max_position_embeddings": getattr(
            model.config.encoder, "max_position_embeddings", None
        ),
    }
    exceeded = {name: limit for name, limit in limits.items() if limit is not None and limit < requested}
    if not exceeded:
        return requested
    usable = min(exceeded.values())
    logger.warning(
        "max_seq_length=%d is longer than %s: using max_seq_length=%d",
        requested,
        " and ".join(f"{name} ({limit})" for name, limit in exceeded.items()),
        usable,
    )
    return usable


def limit(dataset, count: int | None, seed: int | None = None):
    if is_stream(dataset) and count is not None:  # the stream's first rows (it shuffles them as it trains)
        return dataset.take(count)
    if dataset is None or count is None or count >= len(dataset):
        return dataset
    if seed is not None:  # a random subset of train (the files can be sorted by label)
        dataset = dataset.shuffle(seed=seed)
    return dataset.select(range(count))


def setup_logging(training_args: RunTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # The script's and hydrabert's own lines (tasks and sizes, the resume decision, where the outputs went)
    # show on the main process at transformers' default verbosity too; --log_level sets everything.
    own_level = (
        logging.INFO if training_args.log_level == "passive" and training_args.should_log else log_level
    )
    for log in (logger, logging.getLogger("hydrabert")):
        log.setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def prepare_output_dir(training_args: RunTrainingArguments) -> ResumePlan:
    """Resume, start fresh or stop: decided from output_dir before any work (see `plan_resume`)."""
    if not training_args.do_train:
        return ResumePlan()
    plan = plan_resume(
        training_args.output_dir,
        resume_from_checkpoint=training_args.resume_from_checkpoint,
        overwrite_output_dir=training_args.overwrite_output_dir,
        max_steps=training_args.max_steps,
        num_train_epochs=training_args.num_train_epochs,
    )
    if plan.message:
        (logger.warning if plan.finished else logger.info)(plan.message)
    with training_args.main_process_first(desc="removing the replaced run's checkpoints"):
        if training_args.should_save:
            for path in plan.stale_paths:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return plan


def load_data_and_model(model_args, data_args, training_args, configs):
    """Tokenized `{task: {split: Dataset | None}}` (a shared source's tasks have no train split here: the
    source trains as one unit), the training units `{task or shared source: Dataset}`, the model with a head
    per task, its tokenizer, and the length inputs were truncated to."""
    with training_args.main_process_first(desc="loading and tokenizing the tasks' data"):
        loaded = load_tasks(configs, seed=training_args.seed)
        task_specs = {name: task.task_spec() for name, task in loaded.items()}
        model = build_model(model_args, task_specs)
        tokenizer = load_tokenizer(model_args)
        max_length = max_sequence_length(data_args.max_seq_length, tokenizer, model)
        # The length the model trains at travels with it: encode, predict, the pipeline and the ONNX export
        # truncate there by default (config.max_seq_length), and so does whoever loads the saved tokenizer.
        model.config.max_seq_length = max_length
        tokenizer.model_max_length = max_length
        splits, train_units = {}, {}
        for name, task in loaded.items():
            parts = task.splits
            if task.shared is not None:  # its train rows train through the shared source
                parts = datasets.DatasetDict({s: d for s, d in task.splits.items() if s != "train"})
            pairs = task.problem_type == "sentence_similarity"
            tokenized = tokenize_task(
                parts, tokenizer, max_length, cache_dir=data_args.tokenized_cache_dir, separate_pairs=pairs
            )
            splits[name] = {
                "train": limit(tokenized.get("train"), data_args.max_train_samples, training_args.seed),
                "validation": limit(tokenized.get("validation"), data_args.max_eval_samples),
                "test": limit(tokenized.get("test"), data_args.max_test_samples),
            }
            if task.stream is not None:  # tokenised as training reads it
                stream = tokenize_stream(task.stream, tokenizer, max_length, separate_pairs=pairs)
                splits[name]["train"] = limit(stream, data_args.max_train_samples)
            if splits[name]["train"] is not None:
                train_units[name] = splits[name]["train"]
            elif (
                task.shared is not None
                and task.shared.name not in train_units
                and "train" in task.shared.splits
            ):
                source = datasets.DatasetDict(train=task.shared.splits["train"])
                rows = tokenize_task(source, tokenizer, max_length, cache_dir=data_args.tokenized_cache_dir)[
                    "train"
                ]
                train_units[task.shared.name] = limit(rows, data_args.max_train_samples, training_args.seed)
        sizes = dataset_sizes(splits, train_units)
        for name, task in loaded.items():
            shared = f" (train rows from the shared source {task.shared.name})" if task.shared else ""
            logger.info(
                "task %s: %s%s; labels %s",
                name,
                ", ".join(f"{split} {n}" for split, n in sizes[name].items()),
                shared,
                task_specs[name]["labels"],
            )
    return splits, train_units, model, tokenizer, max_length


def dataset_sizes(splits: dict, train_units: dict) -> dict[str, dict[str, int]]:
    """`{task: {split: rows}}`; a shared source's task counts the training rows that carry its label."""
    sizes = {  # a streamed train split has no length: it is not read up front
        name: {split: len(ds) for split, ds in parts.items() if ds is not None and not is_stream(ds)}
        for name, parts in splits.items()
    }
    for unit in train_units.values():
        if label_tasks(unit) is not None:
            for task, count in label_counts(unit).items():
                sizes[task] = {"train": count, **sizes[task]}
    return sizes


def split_of(splits: dict, split: str) -> dict | None:
    chosen = {name: parts[split] for name, parts in splits.items() if parts[split] is not None}
    return chosen or None


def check_run(training_args, model: HydraBertModel, train_sets, eval_sets) -> None:
    """What the Trainer would find out only after creating output_dir."""
    if training_args.do_train and not train_sets:
        raise HydraBertDataError("do_train is set but no task has a train split")
    if training_args.eval_strategy != "no" and not eval_sets:
        raise HydraBertDataError(
            "eval_strategy needs validation data: give validation files or a split percentage"
        )
    if not training_args.do_train:
        return
    check_something_trains(model, frozen_by_arguments(model, training_args), training_args)


def train(trainer: MultiTaskTrainer, checkpoint: str | None, train_sets: dict) -> dict:
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    if not any(is_stream(ds) for ds in train_sets.values()):
        metrics["train_samples"] = sum(len(ds) for ds in train_sets.values())
    if not trainer.args.push_to_hub:
        # weights, config, the *_hydrabert.py code files and the tokenizer; with push_to_hub the
        # final push saves them (a save here would push a commit of its own)
        trainer.save_model()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


def evaluate(trainer: MultiTaskTrainer, sets: dict | None, prefix: str) -> dict:
    if not sets:
        return {}
    logger.info("*** Evaluating on %s ***", "validation" if prefix == "eval" else prefix)
    metrics = trainer.evaluate(eval_dataset=sets, metric_key_prefix=prefix)
    trainer.log_metrics(prefix, metrics)
    trainer.save_metrics(prefix, metrics)
    return metrics


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """`--disable_tqdm true` turns off the Trainer's bars; this turns off the rest while the run lasts: datasets'
    (reading, checking and tokenizing the data), transformers' and huggingface_hub's (loading weights, downloads),
    and with them encode()/predict()'s. Each library's setting is restored afterwards."""
    if enabled:
        yield
        return
    datasets_on = not datasets.utils.are_progress_bars_disabled()
    transformers_on = transformers.utils.logging.is_progress_bar_enabled()
    hub_on = not huggingface_hub.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # huggingface_hub's too
    try:
        yield
    finally:
        if transformers_on:
            transformers.utils.logging.enable_progress_bar()  # huggingface_hub's too: set it back below
        (
            huggingface_hub.utils.enable_progress_bars
            if hub_on
            else huggingface_hub.utils.disable_progress_bars
        )()
        if datasets_on:
            datasets.enable_progress_bars()


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    logger.debug("Training arguments %s", training_args)
    with progress_bars(not training_args.disable_tqdm):
        results = run(model_args, data_args, training_args)
    leave_process_group()  # under DDP/FSDP: every process done before any exits (engines.py says why)
    return results


def run(model_args: ModelArguments, data_args: DataArguments, training_args: RunTrainingArguments) -> dict:

    # Everything that can be wrong with the input is checked before any training work starts.
    configs = task_configs(data_args)
    streamed = [cfg.name for cfg in configs if cfg.streaming]
    if streamed and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError(
            f"task(s) {streamed} stream their train split, which has no length: give --max_steps (the number of "
            "optimizer steps to train), not --num_train_epochs"
        )
    plan = prepare_output_dir(training_args)
    if plan.finished:
        return {}
    set_seed(training_args.seed)
    splits, train_units, model, tokenizer, max_length = load_data_and_model(
        model_args, data_args, training_args, configs
    )
    train_sets = train_units or None
    eval_sets, test_sets = (split_of(splits, s) for s in ("validation", "test"))
    check_run(training_args, model, train_sets, eval_sets)

    # Checked before training: an export that cannot be exact fails now, not after the run.
    export_plan = plan_exports(model, model_args.export) if model_args.export else []
    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_sets if training_args.do_train else None,
        eval_dataset=eval_sets,
        processing_class=tokenizer,
    )
    results: dict = {}
    if training_args.do_train:
        results.update(train(trainer, plan.checkpoint, train_sets))
    if training_args.do_eval:
        results.update(evaluate(trainer, eval_sets, "eval"))
    if training_args.do_predict:
        results.update(evaluate(trainer, test_sets, "test"))
    if trainer.is_world_process_zero():
        trainer.save_state()  # with the final evaluations (PlotsCallback has drawn them)
    exported = {}
    if export_plan and trainer.is_world_process_zero():
        # Before the push, so that output_dir/onnx/ goes up in the model's own commit.
        hub_id = trainer.hub_model_id if training_args.push_to_hub else None
        exported = write_exports(model, tokenizer, training_args.output_dir, export_plan, hub_model_id=hub_id)
    card = card_overrides(model_args, configs, dataset_sizes(splits, train_units), max_length)
    save_card_or_push(trainer, card, exported)
    return results


def save_card_or_push(trainer: MultiTaskTrainer, card: dict, exported: dict[str, str]) -> None:
    """The model card in output_dir, or one commit to the Hub with everything (and each exported standard
    model to its own repo); then one line that says where it all is."""
    args = trainer.args
    pushed = None
    if args.push_to_hub:
        commit = trainer.push_to_hub(commit_message="hydrabert: end of training", **card)
        if trainer.is_world_process_zero():
            pin_card_revision(trainer, commit, card)
            pushed = f"{trainer.hub_model_id} at revision {commit.oid}"
            push_exports(exported, trainer.hub_model_id, args.hub_token, args.hub_private_repo)
    elif args.should_save:
        trainer.create_model_card(**card)
    if trainer.is_world_process_zero():
        logger.info(written_summary(args.output_dir, pushed, exported))


def written_summary(
    output_dir: str, pushed: str | None = None, exported: dict[str, str] | None = None
) -> str:
    """One line naming what the run left in output_dir (model, results, card, plots), the exports written
    beside it, and where it pushed."""
    outputs = {
        "model": ["model.safetensors"],
        "results": ["all_results.json"],
        "card": ["README.md"],
        "plots": ["task_metrics.png", "learning_rates.png"],
    }
    found = {
        what: present
        for what, names in outputs.items()
        if (present := [name for name in names if os.path.isfile(os.path.join(output_dir, name))])
    }
    if not found:
        return f"Nothing was written to {os.path.abspath(output_dir)}"
    summary = f"Outputs in {os.path.abspath(output_dir)}: " + ", ".join(
        f"{what} ({', '.join(names)})" for what, names in found.items()
    )
    if exported:
        summary += "; exports: " + ", ".join(f"{kind} in {folder}" for kind, folder in exported.items())
    return summary + (f"; pushed to {pushed}" if pushed else "")


def card_overrides(
    model_args: ModelArguments,
    configs: list[TaskDataConfig],
    sizes: dict[str, dict[str, int]],
    max_length: int,
) -> dict:
    """What the card cannot learn from the model: the Hub names of the base model and datasets, the
    examples per split, which validation splits were held out of train, and the length inputs were
    truncated to."""
    # A task reading a shared source has that source's dataset and held-out validation split.
    configs = [cfg for group in source_groups(configs).values() for cfg in group]
    overrides = {
        "max_seq_length": max_length,
        "dataset_sizes": sizes,
        # The loader carves one only when the data bring none; local files bring one only with a
        # validation_file (a Hub dataset's own validation split is the case this cannot see).
        "validation_split_percentage": {
            cfg.name: cfg.validation_split_percentage
            for cfg in configs
            if cfg.validation_split_percentage is not None and not cfg.validation_file
        },
    }
    if not os.path.isdir(model_args.model_name_or_path):
        overrides["base_model"] = model_args.model_name_or_path
    hub_datasets = {cfg.name: cfg.dataset_name for cfg in configs if cfg.dataset_name}
    if hub_datasets:
        overrides["datasets"] = hub_datasets
    return overrides


def pin_card_revision(trainer: MultiTaskTrainer, commit, card: dict) -> None:
    """The push is one commit holding weights, code, tokenizer and card. Its sha is known only
    afterwards, so a second commit, touching README.md alone, pins the card's `trust_remote_code`
    snippets to it: users who copy them run exactly the code that was reviewed."""
    from huggingface_hub import HfApi

    trainer.create_model_card(revision=commit.oid, **card)
    HfApi().upload_file(
        path_or_fileobj=os.path.join(trainer.args.output_dir, "README.md"),
        path_in_repo="README.md",
        repo_id=trainer.hub_model_id,
        token=trainer.args.hub_token,
        commit_message=f"Pin the model card's usage snippets to revision {commit.oid[:10]}",
    )
    logger.info("Pushed to %s at revision %s", trainer.hub_model_id, commit.oid)


if __name__ == "__main__":
    main()
