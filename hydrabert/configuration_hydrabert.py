"""HydraBERT configuration: one encoder config plus a head per task.

This file travels to the Hub next to the weights (``trust_remote_code``): it imports only
transformers, numpy (a transformers dependency) and the standard library. It also holds the one
post-processing of logits into labels and scores (`readable_predictions`), which `predict`, the pipeline
and `OnnxPredictor` share: the config owns the label names, and numpy needs no torch (OnnxPredictor runs
where torch is not installed).
"""

from __future__ import annotations

import math

import numpy as np
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

PROBLEM_TYPES = (
    "single_label_classification",
    "multi_label_classification",
    "regression",
    "sentence_similarity",
)
# Tasks trained on the sentence embedding itself: pairs of sentences with a similarity score, no head.
HEADLESS_PROBLEM_TYPES = ("sentence_similarity",)
SIMILARITY_LABEL = "similarity"
# Tasks whose targets are scores (floats), not label names.
SCORE_PROBLEM_TYPES = ("regression", "sentence_similarity")
POOLING_MODES = ("cls", "mean")
# A task's head unless it names another (HydraBertModel.HEADS); its loss, unless it names one (.LOSSES), is the
# problem type's own (cross-entropy, binary cross-entropy, MSE, CoSENT).
DEFAULT_HEAD = "linear"
EMBEDDING_ACTIVATIONS = ("tanh", "identity")
# What the task heads read: the sentence embedding, or the embedding beside tanh(h_[CLS]), which frees the heads from
# bending the embedding (docs/embeddings.md measures it).
HEAD_INPUTS = ("embedding", "embedding+cls")


class HydraBertConfig(PreTrainedConfig):
    r"""
    Configuration of a [`HydraBertModel`]: a BERT-family encoder, a sentence-embedding projection
    (`tanh(Linear(h_[CLS]))`, what BERT's own pooler computes), an optional domain-adaptation
    bottleneck and one classification/regression head per task.

    Args:
        encoder (`dict` or `PreTrainedConfig`, *optional*):
            The backbone's config (any BERT-family model type); a `BertConfig` by default.
        tasks (`dict[str, dict]`, *optional*):
            `{name: {"num_labels": int, "labels": [str, ...], "problem_type": str, "weight": float,
            "class_weights": [float, ...] | None, "head": str, "loss": str | None}}`. Every key is optional
            except that a task needs
            `num_labels` or `labels`. Heads are keyed by task name, never by position. `class_weights`
            (single-label tasks only, one per label) scales each row's cross-entropy by its label's weight.
            A `"sentence_similarity"` task has no head: it trains (and is evaluated on) the sentence embedding
            itself, from pairs of sentences with a similarity score (CoSENT loss on their cosine similarity).
            `head` names the head's architecture (`"linear"`, default; `"mlp"`: two layers) and `loss` another
            loss than the problem type's own (`"focal"`, `"label_smoothing"`); both are keys of
            `HydraBertModel.HEADS` / `.LOSSES`, which a subclass extends (docs/extending.md).
        embedding_dim (`int`, *optional*):
            Size of the sentence embedding; defaults to the encoder's hidden size.
        pooling (`str`, defaults to `"cls"`):
            `"cls"` (the [CLS] state) or `"mean"` (mean over real tokens, using the attention mask).
        embedding_activation (`str`, defaults to `"tanh"`):
            Activation after the projection: `"tanh"` or `"identity"`.
        head_input (`str`, defaults to `"embedding"`):
            What the task heads read: `"embedding"` (the sentence embedding) or `"embedding+cls"` (the embedding
            concatenated with tanh of the [CLS] state; with mean pooling the heads then have features the embedding
            does not carry, so training them bends the embedding less). Width: `head_input_dim`.
        classifier_dropout (`float`, *optional*):
            Dropout before every head; defaults to the encoder's `hidden_dropout_prob`.
        adapter_size (`int`, *optional*):
            Width of a residual bottleneck adapter between the embedding and the heads (domain
            adaptation); `None` turns it off.
        max_seq_length (`int`, *optional*):
            The length (in tokens) the model was trained at: `encode`, `predict`, the pipeline and the ONNX
            predictor truncate there unless given `max_length=`. `None` (models saved before it existed, or never
            trained by run_mtl.py): the tokenizer's `model_max_length`.

    Example:

    ```python
    >>> from hydrabert import HydraBertConfig
    >>> config = HydraBertConfig(tasks={"sentiment": {"labels": ["negative", "positive"]},
    ...                                 "topic": {"num_labels": 6}})
    >>> config.tasks["topic"]["labels"][:2]
    ['LABEL_0', 'LABEL_1']
    ```
    """

    model_type = "hydrabert"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    tasks: dict | None = None
    embedding_dim: int | None = None
    pooling: str = "cls"
    embedding_activation: str = "tanh"
    head_input: str = "embedding"
    classifier_dropout: float | None = None
    adapter_size: int | None = None
    max_seq_length: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.tasks = {name: _normalize_task(name, spec) for name, spec in sorted((self.tasks or {}).items())}
        if self.embedding_dim is None:
            self.embedding_dim = self.encoder.hidden_size
        self._check_fields()

    def _check_fields(self):
        if not isinstance(self.embedding_dim, int) or self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be a positive integer, got {self.embedding_dim!r}")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.embedding_activation not in EMBEDDING_ACTIVATIONS:
            raise ValueError(
                f"embedding_activation must be one of {EMBEDDING_ACTIVATIONS}, got {self.embedding_activation!r}"
            )
        if self.head_input not in HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {HEAD_INPUTS}, got {self.head_input!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if self.adapter_size is not None and (
            not isinstance(self.adapter_size, int) or self.adapter_size <= 0
        ):
            raise ValueError(f"adapter_size must be a positive integer or None, got {self.adapter_size!r}")
        if self.max_seq_length is not None and (
            not isinstance(self.max_seq_length, int)
            or isinstance(self.max_seq_length, bool)
            or self.max_seq_length <= 0
        ):
            raise ValueError(
                f"max_seq_length must be a positive integer or None, got {self.max_seq_length!r}"
            )

    @property
    def head_input_dim(self) -> int:
        """The width of what every head reads (see `head_input`)."""
        extra = self.encoder.hidden_size if self.head_input == "embedding+cls" else 0
        return self.embedding_dim + extra

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def head_task_names(self) -> list[str]:
        """The tasks that have a head (all but sentence-similarity tasks, which train the embedding)."""
        return [
            name for name, spec in self.tasks.items() if spec["problem_type"] not in HEADLESS_PROBLEM_TYPES
        ]

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The encoder's config: it holds the text settings (`vocab_size`, ...), so that
        `resize_token_embeddings` updates `config.encoder.vocab_size`, which the encoder is rebuilt
        from on load. (The base method looks for sub-configs named `text_config`, `decoder`, ...)"""
        return self.encoder

    def head_dropout(self) -> float:
        if self.classifier_dropout is not None:
            return self.classifier_dropout
        return getattr(self.encoder, "hidden_dropout_prob", 0.1)


def _normalize_task(name, spec) -> dict:
    """Fill a task's defaults and check it, so that every consumer sees the same complete record."""
    if not isinstance(name, str) or not name.isidentifier():
        # Task names become module names (heads.<name>) and metric prefixes (eval_<name>_accuracy).
        raise ValueError(f"tasks: task name {name!r} must be a valid Python identifier (letters, digits, _)")
    if not isinstance(spec, dict):
        raise ValueError(f"tasks[{name!r}] must be a dict, got {type(spec).__name__}")
    unknown = set(spec) - {"num_labels", "labels", "problem_type", "weight", "class_weights", "head", "loss"}
    if unknown:
        raise ValueError(f"tasks[{name!r}] has unknown keys {sorted(unknown)}")
    return normalize_task_spec(spec, where=f"tasks[{name!r}]")


def normalize_task_spec(spec: dict, where: str = "", labels_unknown: bool = False) -> dict:
    """The checks of one task's entry (`where` prefixes the messages: "tasks['x']"). The one copy: a data
    config (hydrabert.data.TaskDataConfig) runs it before its data are read, with `labels_unknown` while the
    labels are still to be inferred from the data (then neither the label count nor the class weights' count
    can be checked yet), and again once they are known."""

    def field(key: str) -> str:  # "tasks['x'].weight", or "weight"
        return f"{where}.{key}" if where else key

    task = f"{where}: " if where else ""

    problem_type = spec.get("problem_type") or "single_label_classification"
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"{field('problem_type')} must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    labels = spec.get("labels")
    num_labels = spec.get("num_labels")
    if labels is not None:
        labels = [str(label) for label in labels]
        if not labels or len(set(labels)) != len(labels):
            duplicates = sorted({label for label in labels if labels.count(label) > 1})
            raise ValueError(
                f"{field('labels')} must be a non-empty list of distinct names, got {labels}"
                + (f" (duplicates: {duplicates})" if duplicates else "")
            )
        if num_labels is not None and num_labels != len(labels):
            raise ValueError(f"{task}num_labels={num_labels} but {len(labels)} labels were given")
        num_labels = len(labels)
    if problem_type in HEADLESS_PROBLEM_TYPES:
        # One score per pair, named as saved configs name it.
        if labels not in (None, [SIMILARITY_LABEL]) or num_labels not in (None, 1):
            raise ValueError(f"{task}a {problem_type} task scores sentence pairs and has no labels")
        labels, num_labels = [SIMILARITY_LABEL], 1
    if num_labels is None:
        num_labels = 1 if problem_type in SCORE_PROBLEM_TYPES else None
    if num_labels is not None or not labels_unknown:
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ValueError(
                f"{field('num_labels')} must be a positive integer (or give labels), got {num_labels!r}"
            )
        if problem_type == "single_label_classification" and num_labels < 2:
            raise ValueError(f"{task}single-label classification needs at least 2 labels, got {num_labels}")
        if labels is None:
            labels = [f"LABEL_{i}" for i in range(num_labels)]
    weight = spec.get("weight", 1.0)
    if not is_nonnegative_number(weight):
        raise ValueError(f"{field('weight')} must be a finite number >= 0, got {weight!r}")
    # The head's and the loss's names; the model checks them against its mappings (HydraBertModel.HEADS,
    # .LOSSES), which a subclass extends: this file cannot know a user's additions.
    head, loss = spec.get("head") or DEFAULT_HEAD, spec.get("loss")
    if not isinstance(head, str):
        raise ValueError(f"{field('head')} must be a head's name (e.g. 'mlp'), got {head!r}")
    if problem_type in HEADLESS_PROBLEM_TYPES and head != DEFAULT_HEAD:
        raise ValueError(f"{task}a {problem_type} task has no head, so no head={head!r}")
    if loss is not None and not isinstance(loss, str):
        raise ValueError(f"{field('loss')} must be a loss's name (e.g. 'focal') or None, got {loss!r}")
    class_weights = _checked_class_weights(
        field("class_weights"), spec.get("class_weights"), problem_type, labels
    )
    if loss is not None and class_weights is not None:
        raise ValueError(
            f"{task}class_weights scale the default cross-entropy; with loss={loss!r} drop them "
            "(or weight rows inside your loss)"
        )
    return {
        "num_labels": num_labels,
        "labels": labels,
        "problem_type": problem_type,
        "weight": float(weight),
        "class_weights": class_weights,
        "head": head,
        "loss": loss,
    }


def is_nonnegative_number(value) -> bool:
    """A finite int or float >= 0 (a bool is not a number here): what task and class weights must be."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value >= 0
    )


def _checked_class_weights(field: str, class_weights, problem_type: str, labels) -> list[float] | None:
    """One finite weight >= 0 per label (the count once the labels are known), not all 0; the loss reads them
    by label id."""
    if class_weights is None:
        return None
    if problem_type != "single_label_classification":
        raise ValueError(f"{field} is for single-label classification tasks, not {problem_type}")
    if not isinstance(class_weights, (list, tuple)):
        # "balanced" is resolved from a training split's label counts (hydrabert.data.TaskDataConfig does it).
        hint = (
            ": 'balanced' needs the training data; pass the weights it gives"
            if class_weights == "balanced"
            else ""
        )
        count = f"{len(labels)} " if labels else ""
        raise ValueError(
            f"{field} must be a list of {count}numbers (one per label), got {class_weights!r}{hint}"
        )
    if labels is not None and len(class_weights) != len(labels):
        raise ValueError(
            f"{field} has {len(class_weights)} weights but the task has {len(labels)} labels {labels}: give one "
            "weight per label, in that order"
        )
    for value in class_weights:
        if not is_nonnegative_number(value):
            raise ValueError(f"{field} must hold finite numbers >= 0, got {value!r} in {list(class_weights)}")
    if not any(class_weights):
        raise ValueError(f"{field} are all 0: no row would count in the loss")
    return [float(value) for value in class_weights]


# The progress bar of encode / predict / OnnxPredictor shows beyond this many batches (where transformers' bars show).
PROGRESS_BAR_MIN_BATCHES = 20


def length_sorted_batches(
    sentences: list[str],
    tokenizer,
    batch_size: int,
    max_length: int | None,
    return_tensors: str,
    show_progress_bar: bool | None = None,
):
    """Yields `(indices, encoded)`: the sentences in batches of `batch_size`, longest first by token count,
    truncated at `max_length`, each batch padded to its longest (tensors of `return_tensors`: "pt" or "np"), with
    the sentences' original indices. The one batching of `encode`, `predict` and `OnnxPredictor`.

    Token count rather than characters (the usual proxy, and sentence-transformers'): on the SST-2 test set
    characters left 23% of the batch tokens as padding, tokens 2.5%. The lengths are taken in chunks, keeping
    only the numbers, so memory stays flat on long inputs (a second tokenisation costs ~1% of an encoder pass).
    A progress bar shows beyond `PROGRESS_BAR_MIN_BATCHES` batches unless transformers' bars are off
    (`show_progress_bar=None`), or as told."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = []
    for start in range(0, len(sentences), 4096):
        encoded = tokenizer(sentences[start : start + 4096], truncation=True, max_length=max_length)
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    order = sorted(range(len(sentences)), key=lambda i: -lengths[i])
    starts = range(0, len(order), batch_size)
    if show_progress_bar is None:
        from transformers.utils import logging as hf_logging

        show_progress_bar = len(starts) > PROGRESS_BAR_MIN_BATCHES and hf_logging.is_progress_bar_enabled()
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Batches", unit="batch")
    for start in starts:
        indices = order[start : start + batch_size]
        encoded = tokenizer(
            [sentences[i] for i in indices],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors=return_tensors,
        )
        yield indices, encoded


def readable_predictions(spec: dict, logits, top_k: int | None = None) -> list:
    """Rows of one task's logits (a 2-D array: numpy, or anything `np.asarray` takes) as names and scores, one
    entry per row: `{"label": name, "score": probability}` (single-label), `{"label": [names], "score":
    [probabilities]}` for the labels above 0.5 (multi-label), `{"score": value}` (regression); with `top_k`, a
    list of the `top_k` most probable `{"label", "score"}` per row. The one copy that `predict`, the pipeline
    and `OnnxPredictor` use, so that they agree to the last digit."""
    logits = np.asarray(logits, dtype=np.float64)
    names = spec["labels"]
    problem_type = spec.get("problem_type", "single_label_classification")
    if problem_type == "regression":
        values = logits[:, 0] if logits.shape[-1] == 1 else logits
        return [{"score": value} for value in values.tolist()]
    if problem_type == "single_label_classification":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
    else:
        probs = 1.0 / (1.0 + np.exp(-logits))
    if top_k is not None:
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
        return [
            [{"label": names[j], "score": float(row[j])} for j in ids]
            for row, ids in zip(probs, order, strict=True)
        ]
    if problem_type == "single_label_classification":
        ids = probs.argmax(axis=-1)
        return [
            {"label": names[j], "score": float(row[j])} for row, j in zip(probs, ids.tolist(), strict=True)
        ]
    return [
        {"label": [names[j] for j in np.flatnonzero(row > 0.5)], "score": [float(p) for p in row[row > 0.5]]}
        for row in probs
    ]


__all__ = ["HydraBertConfig", "length_sorted_batches", "normalize_task_spec", "readable_predictions"]
