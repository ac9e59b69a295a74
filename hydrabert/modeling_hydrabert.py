"""HydraBERT: one BERT-family encoder, a sentence embedding, one head per task.

This file travels to the Hub next to the weights and runs under ``trust_remote_code`` on machines
that never installed hydrabert: it imports only torch, transformers, the standard library and,
through a flat relative import, its configuration file.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, cached_file, can_return_tuple
from transformers.utils import logging as hf_logging

from .configuration_hydrabert import (
    DEFAULT_HEAD,
    HEADLESS_PROBLEM_TYPES,
    HydraBertConfig,
    _normalize_task,
)
from .pipeline_hydrabert import HydraBertInferenceMixin, custom_pipelines_entry

logger = hf_logging.get_logger(__name__)

# Matches the index of a transformer block in a parameter name, whatever the family calls the
# list: BERT/RoBERTa/ELECTRA "encoder.layer.3.", DistilBERT "transformer.layer.3.", others "layers.3.".
_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")

# HydraBertConfig's own settings besides the encoder and the tasks, read from the config class itself:
# the one list of what from_encoder_pretrained passes to the config (run_mtl.py's arguments mirror it).
# (max_seq_length is not one: it records the length a run trained at, which the run sets.)
CONFIG_SETTINGS = tuple(
    name
    for name in inspect.get_annotations(HydraBertConfig)
    if name not in ("encoder", "tasks", "max_seq_length")
)
# Keyword arguments of from_pretrained that say where and how to read a checkpoint's config.
_CONFIG_LOADING_KWARGS = (
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "revision",
    "local_files_only",
    "subfolder",
    "trust_remote_code",
)

# CoSENT's scale on cosine similarities (sentence-transformers' CoSENTLoss default, from the CoSENT paper).
COSENT_SCALE = 20.0


@dataclass
class HydraBertOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
        With `task_ids` (what the trainer passes), the weighted multi-task loss: each task's loss
        averaged over its rows, times the task's weight, averaged over the tasks present in the batch.
        With `labels` as a dict by task, the same over each task's labelled rows. With `task="name"`, that
        task's plain loss.
    logits (`torch.FloatTensor` or `dict[str, torch.FloatTensor]`):
        With `task="name"`, that task's logits `(batch, num_labels)`; otherwise a dict of every task's
        logits, all computed from one encoder pass.
    sentence_embedding (`torch.FloatTensor` of shape `(batch, embedding_dim)`):
        The representation the heads read: `tanh(Linear(h_[CLS]))`, then the adapter if configured.
    task_losses (`dict[str, torch.FloatTensor]`, *optional*):
        Each task's unweighted loss over its rows (for logging and divergence checks).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | dict[str, torch.FloatTensor] | None = None
    sentence_embedding: torch.FloatTensor | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class HydraBertPooler(nn.Module):
    """Sentence embedding from token states: BERT's pooler (the [CLS] state through a dense layer and
    tanh), with masked mean pooling as the alternative."""

    def __init__(self, config: HydraBertConfig):
        super().__init__()
        self.pooling = config.pooling
        self.dense = nn.Linear(config.encoder.hidden_size, config.embedding_dim)
        self.activation = nn.Tanh() if config.embedding_activation == "tanh" else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.project(self.pool(hidden_states, attention_mask))

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The vector the dense layer reads: h_[CLS], or the masked mean of the token states."""
        if self.pooling == "mean" and attention_mask is not None:
            # Padding positions must not dilute the mean.
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.pooling == "mean":
            return hidden_states.mean(dim=1)
        return hidden_states[:, 0]

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(pooled))


class HydraBertAdapter(nn.Module):
    """Residual bottleneck for domain adaptation. The up-projection starts at zero, so a new adapter
    is the identity and training starts from the pretrained representation."""

    def __init__(self, config: HydraBertConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.embedding_dim)
        self.down = nn.Linear(config.embedding_dim, config.adapter_size)
        self.up = nn.Linear(config.adapter_size, config.embedding_dim)
        # Read by _init_weights: transformers initialises leaf modules one by one.
        self.up.zero_init = True

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding + self.up(F.gelu(self.down(self.layer_norm(embedding))))


# ------------------------------------------------------------------------------ heads and losses
# A task spec names its head (`"head"`) and, optionally, a loss other than its problem type's own (`"loss"`).
# The names are keys of these mappings, which HydraBertModel holds as class attributes: a subclass extends
# them (`HEADS = {**HydraBertModel.HEADS, "mine": build}`), as transformers keeps LOSS_MAPPING and timm its
# registries. Code that a saved model needs must travel with it: see docs/extending.md.


def linear_head(config: HydraBertConfig, spec: dict) -> nn.Module:
    """One Linear from what the heads read (the sentence embedding, `config.head_input`) to the task's outputs
    (BERT's classifier)."""
    return nn.Linear(config.head_input_dim, spec["num_labels"])


def mlp_head(config: HydraBertConfig, spec: dict) -> nn.Module:
    """Two layers as wide as the embedding: Linear -> GELU -> dropout -> Linear (the classification head of
    RoBERTa and ELECTRA, with GELU)."""
    width = config.embedding_dim
    return nn.Sequential(
        nn.Linear(config.head_input_dim, width),
        nn.GELU(),
        nn.Dropout(config.head_dropout()),
        nn.Linear(width, spec["num_labels"]),
    )


@dataclass(frozen=True)
class TaskLoss:
    """A loss a task may name: `fn(logits, labels, spec, reduction)` returns the batch's mean over the rows that
    count (`reduction="mean"`) or one value per row (`"none"`, NaN where the label is -100); the problem types it
    serves."""

    fn: object
    problem_types: tuple[str, ...]


FOCAL_GAMMA = 2.0  # Lin et al. (2017)'s default
LABEL_SMOOTHING = 0.1  # Szegedy et al. (2016)'s value, and the usual one


def _mean_or_rows(loss: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return torch.where(counted, loss, float("nan"))
    return loss.sum() / counted.sum()  # NaN when no row counts, as F.cross_entropy's mean


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, spec: dict, reduction: str = "mean"
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017): each row's cross-entropy times (1 - p_true)^gamma, so rows the model
    already gets right weigh little and hard rows dominate; gamma = FOCAL_GAMMA."""
    cross_entropy = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")
    loss = (1.0 - torch.exp(-cross_entropy)) ** FOCAL_GAMMA * cross_entropy
    return _mean_or_rows(loss, labels != -100, reduction)


def label_smoothing_loss(
    logits: torch.Tensor, labels: torch.Tensor, spec: dict, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against targets smoothed by LABEL_SMOOTHING (PyTorch's own `label_smoothing`)."""
    loss = F.cross_entropy(
        logits.float(), labels, ignore_index=-100, reduction="none", label_smoothing=LABEL_SMOOTHING
    )
    return _mean_or_rows(loss, labels != -100, reduction)


HEADS = {"linear": linear_head, "mlp": mlp_head}
LOSSES = {
    "focal": TaskLoss(focal_loss, ("single_label_classification",)),
    "label_smoothing": TaskLoss(label_smoothing_loss, ("single_label_classification",)),
}


def check_heads_and_losses(model_class, tasks: dict[str, dict]) -> None:
    """Every task names a head and a loss `model_class` knows (its HEADS, LOSSES), a loss for its problem type."""
    for name, spec in tasks.items():
        head, loss = spec.get("head", DEFAULT_HEAD), spec.get("loss")
        if spec["problem_type"] not in HEADLESS_PROBLEM_TYPES and head not in model_class.HEADS:
            raise ValueError(
                f"Task {name!r}: unknown head {head!r}; known heads: {sorted(model_class.HEADS)} (add yours to "
                f"{model_class.__name__}.HEADS: docs/extending.md)"
            )
        if loss is None:
            continue
        if loss not in model_class.LOSSES:
            raise ValueError(
                f"Task {name!r}: unknown loss {loss!r}; known losses: {sorted(model_class.LOSSES)} (add yours to "
                f"{model_class.__name__}.LOSSES: docs/extending.md)"
            )
        if spec["problem_type"] not in model_class.LOSSES[loss].problem_types:
            raise ValueError(
                f"Task {name!r}: loss {loss!r} serves {list(model_class.LOSSES[loss].problem_types)}, not "
                f"{spec['problem_type']}"
            )


class HydraBertPreTrainedModel(PreTrainedModel):
    config_class = HydraBertConfig
    # A plain BERT checkpoint's weights load into `encoder`.
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    # Declared on the wrapper too: without them transformers falls back to eager attention for the
    # whole model, encoder included.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Our loss is a per-task mean, not a sum over items: the Trainer must scale it for gradient
    # accumulation itself instead of passing `num_items_in_batch`.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, reading safetensors weights only (never a pickled
        `pytorch_model.bin`: checkpoints come from strangers), with an error that names a corrupt file.

        A plain encoder checkpoint (a BERT, MiniLM, SciBERT... folder or Hub id) loads as with
        `BertForSequenceClassification.from_pretrained`: its weights fill the encoder (and the projection,
        from its pooler, as `from_encoder_pretrained` does), `HydraBertConfig` fields given as keywords
        (`tasks=...`, `pooling=...`) configure the rest, and the new weights are reported as missing."""
        kwargs.setdefault("use_safetensors", True)
        if kwargs.get("config") is None and cls._is_encoder_checkpoint(pretrained_model_name_or_path, kwargs):
            output_loading_info = kwargs.pop("output_loading_info", False)
            model, loading_info = cls._from_encoder_checkpoint(pretrained_model_name_or_path, **kwargs)
            return (model, loading_info) if output_loading_info else model
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except OSError as err:
            folder = str(pretrained_model_name_or_path)
            if kwargs["use_safetensors"] and os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
                raise OSError(
                    f"{folder} holds only pickled weights (pytorch_model.bin), and unpickling can run code: "
                    "hydrabert loads safetensors only. Pass use_safetensors=False if you trust the file, then "
                    "save_pretrained writes model.safetensors."
                ) from err
            raise
        except Exception as err:
            # safetensors says "Error while deserializing header: ..." and not which file it was reading.
            if type(err).__name__ != "SafetensorError":
                raise
            raise OSError(
                f"Cannot load {pretrained_model_name_or_path}: {_safetensors_files(pretrained_model_name_or_path)} "
                f"is corrupt or truncated ({err}); download or save the checkpoint again."
            ) from err

    @classmethod
    def _is_encoder_checkpoint(cls, name_or_path, kwargs: dict) -> bool:
        """Whether `name_or_path` holds a plain encoder (its config.json names another model type). Without this
        check the base class would build a default 768-wide BERT around it."""
        loading = {k: kwargs[k] for k in _CONFIG_LOADING_KWARGS if k in kwargs}
        config_dict, _ = cls.config_class.get_config_dict(name_or_path, **loading)
        model_type = config_dict.get("model_type")
        if model_type is None:
            raise ValueError(
                f"{name_or_path}: its config.json has no model_type, so it is neither a hydrabert checkpoint nor "
                "an encoder one; load the encoder with HydraBertModel.from_encoder_pretrained(name_or_path, tasks=...)."
            )
        return model_type != cls.config_class.model_type

    def _init_weights(self, module):
        # The encoder's own modules are initialised by the encoder (transformers dispatches to each
        # sub-model's _init_weights); this covers the projection, the adapter and the heads.
        std = getattr(self.config.encoder, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            if getattr(module, "zero_init", False):
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class HydraBertModel(HydraBertInferenceMixin, HydraBertPreTrainedModel):
    r"""
    A BERT-family encoder shared by several tasks: `encoder -> pooler (tanh(Linear(h_[CLS]))) ->
    adapter (optional) -> dropout -> heads[task]`.

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> from hydrabert import HydraBertModel
    >>> model = HydraBertModel.from_encoder_pretrained(
    ...     "sentence-transformers/all-MiniLM-L6-v2",
    ...     tasks={"sentiment": {"labels": ["negative", "positive"]}, "topic": {"num_labels": 6}},
    ... )
    >>> tokenizer = AutoTokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    >>> batch = tokenizer(["a gripping film"], return_tensors="pt")
    >>> model(**batch).logits.keys()            # every task from one encoder pass
    dict_keys(['sentiment', 'topic'])
    ```
    """

    # Which head and loss a task's name picks (module docs above; extend in a subclass).
    HEADS = HEADS
    LOSSES = LOSSES

    def __init__(self, config: HydraBertConfig):
        super().__init__(config)
        check_heads_and_losses(type(self), config.tasks)
        self.encoder = _encoder_from_config(config.encoder)
        self.pooler = HydraBertPooler(config)
        self.adapter = HydraBertAdapter(config) if config.adapter_size else None
        self.dropout = nn.Dropout(config.head_dropout())
        # Sentence-similarity tasks have no head: they train the embedding itself.
        self.heads = nn.ModuleDict(
            {name: self._build_head(config.tasks[name]) for name in config.head_task_names}
        )
        self.post_init()

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path: str, tasks: dict | None = None, **kwargs):
        """Start from any BERT-family checkpoint (BERT, SciBERT, BioBERT, MiniLM, ...).

        Every encoder weight is loaded, and a fresh model's embedding is the checkpoint's own:
        - a sentence-transformers checkpoint (a `modules.json` naming a Pooling module, as
          all-MiniLM-L6-v2) keeps its pooling (`pooling="mean"` there, unless given), and the projection
          starts as the identity (also with `pooling="cls"`: such a checkpoint's pooler was never part of its
          embedding), so `encode()` gives the published embedding through tanh (on STS-B, 0.8205 Spearman
          against the published 0.8203; docs/embeddings.md);
        - any other checkpoint keeps BERT's pooled output: the projection is initialised from its pooler when
          it has one of the right shape (`tanh(Linear(h_[CLS]))`).
        The adapter and heads are new. Keyword arguments that are `HydraBertConfig` fields go to the config;
        the rest (`revision`, `cache_dir`, `token`, `local_files_only`, ...) to loading.
        """
        model, _ = cls._from_encoder_checkpoint(encoder_name_or_path, tasks=tasks, **kwargs)
        return model

    @classmethod
    def _from_encoder_checkpoint(cls, encoder_name_or_path: str, tasks: dict | None = None, **kwargs):
        """`from_encoder_pretrained`, plus `from_pretrained`'s loading info: which of the model's weights are
        new (`missing_keys`) and which checkpoint weights went unused (`unexpected_keys`)."""
        config_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_SETTINGS}
        checkpoint_pooling = _sentence_transformers_pooling(encoder_name_or_path, kwargs)
        if checkpoint_pooling is not None and config_kwargs.get("pooling") is None:
            config_kwargs["pooling"] = checkpoint_pooling
        encoder_config = AutoConfig.from_pretrained(encoder_name_or_path, **kwargs)
        model = cls(HydraBertConfig(encoder=encoder_config, tasks=tasks or {}, **config_kwargs))
        pretrained, pretrained_info = AutoModel.from_pretrained(
            encoder_name_or_path, config=encoder_config, output_loading_info=True, **kwargs
        )
        loading_info = _load_encoder_weights(model, pretrained, pretrained_info, checkpoint_pooling)
        model.config.encoder._name_or_path = str(encoder_name_or_path)
        return model, loading_info

    # ------------------------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with the pipeline registered: `config.json` names
        `pipeline_hydrabert.HydraBertPipeline` under `custom_pipelines` (the file is copied with this
        one, as its relative import), so `pipeline(model=folder, trust_remote_code=True)` finds its task
        without the Hub. Save the tokenizer into the same folder for the pipeline to load it.

        A model sharded by FSDP2 saves as the plain model: `fully_shard` gives it a class of its own made in torch
        (`FSDPHydraBertModel`), whose module file would otherwise travel as the model's code and whose name would
        become the config's architecture. Pass the gathered `state_dict`, as the Trainer does."""
        pipelines = dict(getattr(self.config, "custom_pipelines", None) or {})
        self.config.custom_pipelines = {**pipelines, **custom_pipelines_entry()}
        sharded = type(self)
        plain = next(c for c in sharded.__mro__ if not c.__module__.startswith("torch."))
        if plain is sharded:
            return super().save_pretrained(save_directory, *args, **kwargs)
        self.__class__ = plain
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.__class__ = sharded

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    # ------------------------------------------------------------------------------------- tasks
    @property
    def task_names(self) -> list[str]:
        return list(self.config.tasks)

    def add_task(
        self,
        name: str,
        num_labels: int | None = None,
        labels: list[str] | None = None,
        problem_type: str = "single_label_classification",
        weight: float = 1.0,
        class_weights: list[float] | None = None,
        head: str = DEFAULT_HEAD,
        loss: str | None = None,
    ) -> nn.Module | None:
        """Add a new, freshly initialised head (`head`: a key of `HEADS`; `loss`: of `LOSSES`, or None for the
        problem type's own); the encoder and the other heads are untouched. A `"sentence_similarity"` task gets
        no head (it trains the embedding): None is returned."""
        if name in self.config.tasks:
            raise ValueError(f"Task {name!r} already exists; known tasks: {self.task_names}")
        spec = {"num_labels": num_labels, "labels": labels, "problem_type": problem_type, "weight": weight}
        spec = _normalize_task(name, {**spec, "class_weights": class_weights, "head": head, "loss": loss})
        check_heads_and_losses(type(self), {name: spec})
        if spec["problem_type"] in HEADLESS_PROBLEM_TYPES:
            self.config.tasks = dict(sorted({**self.config.tasks, name: spec}.items()))
            return None
        head = self._build_head(spec)
        head.apply(self._init_weights)
        reference = self.pooler.dense.weight
        self.heads[name] = head.to(device=reference.device, dtype=reference.dtype)
        self.config.tasks = dict(sorted({**self.config.tasks, name: spec}.items()))
        return self.heads[name]

    def remove_task(self, name: str) -> None:
        self._check_task(name)
        if name in self.heads:
            del self.heads[name]
        self.config.tasks = {k: v for k, v in self.config.tasks.items() if k != name}

    def _build_head(self, spec: dict) -> nn.Module:
        return self.HEADS[spec.get("head", DEFAULT_HEAD)](self.config, spec)

    def _check_task(self, name: str) -> None:
        if name not in self.config.tasks:
            raise ValueError(f"Unknown task {name!r}; known tasks: {self.task_names}")

    def per_example_loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`(batch,)`: each row's loss for `task` (NaN where the label is -100), times its label's weight when the
        task has `class_weights` (never times the task's `weight`); their mean over the rows that count is
        `forward(task=task, labels=labels).loss`. Evaluation averages these over a whole data set, so that the
        result does not depend on how the rows were batched or sharded. A sentence-similarity task has no loss of
        one row (CoSENT ranks the batch's pairs against each other): all NaN."""
        self._check_task(task)
        if self.config.tasks[task]["problem_type"] in HEADLESS_PROBLEM_TYPES:
            return torch.full(logits.shape[:1], float("nan"), device=logits.device)
        return _task_loss(task, self.config.tasks[task], logits, labels, reduction="none", losses=self.LOSSES)

    def get_layer_depth(self, parameter_name: str) -> int:
        """Depth of a parameter for layer-wise learning rates: 0 = embeddings, k = encoder block k
        (1..L), L + 1 = everything above the encoder (projection, adapter, heads)."""
        num_layers = self.config.encoder.num_hidden_layers
        if not parameter_name.startswith("encoder."):
            return num_layers + 1
        match = _LAYER_INDEX.search(parameter_name)
        if match:
            return int(match.group(1)) + 1
        if "embeddings" in parameter_name:
            return 0
        # Anything else inside the encoder (e.g. a final norm) sits on top of the last block.
        return num_layers

    # ----------------------------------------------------------------------------------- forward
    @can_return_tuple  # return_dict=False (argument or config): a tuple, as every transformers model
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task: str | None = None,
        task_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        encoder_features: torch.Tensor | None = None,
        **kwargs,
    ) -> HydraBertOutput:
        r"""
        task (`str`, *optional*):
            Return this task's logits (and compute its loss). Without it, logits is a dict of all tasks.
        task_ids (`torch.LongTensor` of shape `(batch,)`, *optional*):
            For a batch that mixes tasks: the index (in `model.task_names` order) of each row's task.
        labels (`torch.Tensor` or `dict[str, torch.Tensor]`, *optional*):
            Class ids `(batch,)` for single-label tasks (-100 = ignore), multi-hot `(batch, num_labels)`
            for multi-label tasks, values `(batch,)` or `(batch, num_labels)` for regression.
            A dict `{task: tensor}` labels each row for several tasks at once (rows of one data set
            annotated several ways): a row without a label for a task holds -100 (class ids) or NaN
            (floats) there, and each task's loss averages over the rows that have its label.
        encoder_features (`torch.FloatTensor` of shape `(batch, hidden_size)`, *optional*):
            What `get_encoder_features` returns for this batch (`2 * hidden_size` wide with
            `head_input="embedding+cls"`): the encoder and pooling are skipped (a
            frozen encoder's outputs computed once and reused; see `hydrabert.feature_cache`).
        """
        task = self._batch_task(task, task_ids, labels)
        hidden_states = attentions = None
        if encoder_features is None:
            inputs = dict(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
            encoder_features, hidden_states, attentions = self._run_encoder(
                attention_mask, inputs_embeds, output_hidden_states, output_attentions, **inputs, **kwargs
            )
        pooled, cls_state = encoder_features, None
        # With head_input="embedding+cls" the [CLS] state rides behind the pooled one (_features).
        if self.config.head_input == "embedding+cls":
            pooled, cls_state = encoder_features.split(self.config.encoder.hidden_size, dim=-1)
        embedding = self.pooler.project(pooled)
        if self.adapter is not None:
            embedding = self.adapter(embedding)
        head_input = embedding if cls_state is None else torch.cat([embedding, torch.tanh(cls_state)], dim=-1)
        features = self.dropout(head_input)
        # Every head on every batch: heads are tiny, and this keeps all parameters in the graph (DDP
        # without find_unused_parameters) while one encoder pass serves all tasks.
        all_logits = {name: head(features) for name, head in self.heads.items()}
        all_logits.update(pair_similarities(self.config.tasks, embedding, task, task_ids))

        loss, task_losses = None, None
        if labels is not None:
            loss, task_losses = multitask_loss(
                self.config.tasks, all_logits, labels, task, task_ids, self.LOSSES
            )

        return HydraBertOutput(
            loss=loss,
            logits=all_logits[task] if task is not None else all_logits,
            sentence_embedding=embedding,
            task_losses=task_losses,
            hidden_states=hidden_states,
            attentions=attentions,
        )

    def _batch_task(self, task, task_ids, labels) -> str | None:
        """The one task of the batch (None: all heads, or one task per row from `task_ids`)."""
        if task is not None:
            self._check_task(task)
            if task_ids is not None:
                raise ValueError("Pass either `task` or `task_ids`, not both.")
        if isinstance(labels, dict):  # labels by task: the rows of each task are those labelled for it
            if task is not None or task_ids is not None:
                raise ValueError(
                    "`labels` as a dict {task: tensor} names the tasks itself: pass no `task` or `task_ids`."
                )
            return None
        if labels is not None and task is None and task_ids is None:
            if len(self.config.tasks) != 1:
                raise ValueError(
                    f"`labels` needs `task` (one task for the batch) or `task_ids` (one per row); "
                    f"known tasks: {self.task_names}"
                )
            task = self.task_names[0]
        return task

    def _run_encoder(self, attention_mask, inputs_embeds, output_hidden_states, output_attentions, **inputs):
        """The encoder's pass for `forward`: (pooled features, hidden states, attentions)."""
        # Resolved here, as BertModel does from its own config: an explicit None passed down would switch the
        # encoder's output capture off, and the encoder reads config.encoder, not this model's config.
        if output_hidden_states is None:
            output_hidden_states = getattr(self.config, "output_hidden_states", False)
        if output_attentions is None:
            output_attentions = getattr(self.config, "output_attentions", False)
        # Optional inputs only when given: not every encoder family takes token_type_ids or position_ids.
        inputs = {key: value for key, value in inputs.items() if value is not None}
        outputs = self.encoder(
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **inputs,
        )
        features = self._features(outputs.last_hidden_state, attention_mask)
        return features, outputs.hidden_states, outputs.attentions

    def _features(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """What the layers above the encoder read: the pooled state, and with `head_input="embedding+cls"` the
        [CLS] state after it."""
        pooled = self.pooler.pool(last_hidden_state, attention_mask)
        if self.config.head_input == "embedding+cls":
            return torch.cat([pooled, last_hidden_state[:, 0]], dim=-1)
        return pooled

    def get_encoder_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """What the layers above the encoder read, `(batch, hidden_size)`: the encoder's last hidden state at [CLS]
        (`pooling="cls"`) or its masked mean (`pooling="mean"`); with `head_input="embedding+cls"`,
        `(batch, 2 * hidden_size)`, the [CLS] state after the pooled one. `forward(encoder_features=...)` takes it."""
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self._features(outputs.last_hidden_state, attention_mask)


def _load_encoder_weights(model, pretrained, pretrained_info: dict, checkpoint_pooling: str | None) -> dict:
    """Copies an encoder checkpoint (`pretrained`, loaded by `AutoModel`) into a new model so that its embedding
    is the checkpoint's own (see `from_encoder_pretrained`); returns `from_pretrained`-style loading info."""
    pretrained_pooler = getattr(pretrained, "pooler", None)
    # A checkpoint saved without a pooler gets a random one from AutoModel: not worth copying.
    checkpoint_has_pooler = not any(k.startswith("pooler.") for k in pretrained_info["missing_keys"])
    if pretrained_pooler is not None:
        pretrained.pooler = None
    # strict=True: every encoder weight must be matched, or this raises and names the missing ones.
    state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("pooler.")}
    model.encoder.load_state_dict(state, strict=True)
    loaded = {f"encoder.{k}" for k in state}
    unused = set()
    dense = getattr(pretrained_pooler, "dense", None)
    projection = model.pooler.dense
    if checkpoint_pooling is not None and projection.in_features == projection.out_features:
        # The checkpoint's embedding is its pooled token states, with no dense layer: the identity keeps it.
        with torch.no_grad():
            projection.weight.copy_(torch.eye(projection.in_features))
            projection.bias.zero_()
        loaded |= {"pooler.dense.weight", "pooler.dense.bias"}
        if pretrained_pooler is not None and checkpoint_has_pooler:
            unused = {f"pooler.{k}" for k in pretrained_pooler.state_dict()}
    elif isinstance(dense, nn.Linear) and checkpoint_has_pooler:
        if model.config.pooling == "cls" and dense.weight.shape == projection.weight.shape:
            with torch.no_grad():
                projection.weight.copy_(dense.weight)
                projection.bias.copy_(dense.bias)
            loaded |= {"pooler.dense.weight", "pooler.dense.bias"}
        else:
            unused = {f"pooler.{k}" for k in pretrained_pooler.state_dict()}
    return {
        "missing_keys": set(model.state_dict()) - loaded,
        "unexpected_keys": unused,
        "mismatched_keys": set(),
        "error_msgs": [],
    }


def _sentence_transformers_pooling(name_or_path, loading_kwargs: dict) -> str | None:
    """The pooling of a sentence-transformers checkpoint ("mean" or "cls", read from its modules.json and its
    Pooling module's config), or None: a plain encoder checkpoint, or a pooling hydrabert has no mode for."""

    loading = {
        k: loading_kwargs[k]
        for k in _CONFIG_LOADING_KWARGS
        if k in loading_kwargs and k != "trust_remote_code"
    }

    def read(filename):
        path = cached_file(
            name_or_path,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **loading,
        )
        if path is None:
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    modules = read("modules.json") or []
    pooling = next((m for m in modules if str(m.get("type", "")).endswith("models.Pooling")), None)
    if pooling is None:
        return None
    settings = read(f"{pooling['path']}/config.json" if pooling.get("path") else "config.json") or {}
    enabled = sorted(key for key, value in settings.items() if key.startswith("pooling_mode_") and value)
    mode = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}.get(",".join(enabled))
    if mode is None:
        logger.warning(
            "%s is a sentence-transformers checkpoint pooled by %s, which hydrabert has no pooling for: its "
            "embedding starts from [CLS] instead (pass pooling='mean' or 'cls' to choose).",
            name_or_path,
            enabled,
        )
    return mode


def _safetensors_files(name_or_path) -> str:
    """The weights file(s) of a local checkpoint folder, for error messages."""
    folder = str(name_or_path)
    if not os.path.isdir(folder):
        return f"the weights file (model.safetensors) of {folder!r}"
    files = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    if len(files) == 1:
        return os.path.join(folder, files[0])
    return f"one of the weights files {files} in {folder}"


def _encoder_from_config(encoder_config):
    """The backbone without its own pooler: our projection replaces it, and an unused pooler would
    hold parameters that never get a gradient (which DDP rejects)."""
    model_class = AutoModel._model_mapping[type(encoder_config)]
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return AutoModel.from_config(encoder_config, add_pooling_layer=False)
    return AutoModel.from_config(encoder_config)


# ------------------------------------------------------------------------------------------- losses
# The model's loss, as functions of the task specs: `HydraBertModel.forward` calls them.


def pair_similarities(tasks: dict[str, dict], embedding, task, task_ids) -> dict[str, torch.Tensor]:
    """Sentence-similarity tasks in the batch: each row's cosine similarity with its partner, `(batch,)` (NaN
    on other tasks' rows). A task's rows hold its pairs' first sentences, then their second sentences in
    the same order (what `MultiTaskCollator` builds): row i of n pairs with row n + i."""
    task_names = list(tasks)
    similarity_tasks = [
        name for name, spec in tasks.items() if spec["problem_type"] in HEADLESS_PROBLEM_TYPES
    ]
    if task is not None:
        present = {task: None} if task in similarity_tasks else {}
    elif task_ids is not None:
        rows_of = {n: (task_ids == task_names.index(n)).nonzero().squeeze(-1) for n in similarity_tasks}
        present = {name: rows for name, rows in rows_of.items() if len(rows)}
    else:  # sentences without pairs: no similarity to compute
        present = {}
    similarities = {}
    for name, rows in present.items():
        pairs = embedding if rows is None else embedding[rows]
        if len(pairs) % 2:
            raise ValueError(
                f"Task {name!r} ({tasks[name]['problem_type']}): its {len(pairs)} rows must be "
                "pairs: first sentences, then their second sentences in the same order"
            )
        half = len(pairs) // 2
        cosine = F.cosine_similarity(pairs[:half].float(), pairs[half:].float(), dim=-1).repeat(2)
        if rows is None:
            similarities[name] = cosine
        else:
            full = torch.full(embedding.shape[:1], float("nan"), device=embedding.device)
            similarities[name] = full.index_put((rows,), cosine)
    return similarities


def multitask_loss(tasks: dict[str, dict], all_logits, labels, task, task_ids, losses: dict):
    """(loss, task_losses): each task's loss over its rows, then their weighted mean over the tasks that
    have rows in the batch. The rows of a task: the whole batch (`task`), the rows whose `task_ids` name it,
    or (`labels` a dict by task) the rows whose label for it is not missing."""
    if isinstance(labels, dict):
        batch_size = len(next(iter(all_logits.values())))
        rows_per_task, labels_per_task = _labelled_rows(tasks, labels, batch_size), labels
    elif task is not None:
        rows_per_task, labels_per_task = {task: None}, {task: labels}  # the whole batch
    else:
        task_names = list(tasks)
        if task_ids.shape[0] != labels.shape[0]:
            raise ValueError(f"task_ids has {task_ids.shape[0]} rows but labels has {labels.shape[0]}")
        bad = (task_ids < 0) | (task_ids >= len(task_names))
        if bad.any():
            raise ValueError(
                f"task_ids must be in [0, {len(task_names)}) (tasks {task_names}), "
                f"got {task_ids[bad].unique().tolist()}"
            )
        present = task_ids.unique().tolist()
        rows_per_task = {task_names[i]: task_ids == i for i in present}
        labels_per_task = dict.fromkeys(rows_per_task, labels)

    task_losses = {}
    for name, rows in rows_per_task.items():
        logits = all_logits[name] if rows is None else all_logits[name][rows]
        task_labels = labels_per_task[name] if rows is None else labels_per_task[name][rows]
        task_losses[name] = _task_loss(name, tasks[name], logits, task_labels, losses=losses)
    if task is not None:
        loss = task_losses[task]  # one task asked for by name: its plain loss
    elif task_losses:
        weighted = [tasks[name]["weight"] * value for name, value in task_losses.items()]
        loss = torch.stack(weighted).sum() / len(weighted)
    else:  # a dict of labels in which no row is labelled: nothing to learn from this batch
        loss = None
    # Heads whose task is absent from this batch join the graph with a zero term, so that
    # DDP sees a gradient (zero) for every parameter on every step. nan_to_num: a diverged
    # head must not poison the other tasks' loss (it is reported when its own task comes up).
    unused = [
        torch.nan_to_num(logits).sum() for name, logits in all_logits.items() if name not in task_losses
    ]
    if loss is None:
        loss = 0.0 * torch.stack(unused).sum()
    elif unused and torch.is_grad_enabled():
        loss = loss + 0.0 * torch.stack(unused).sum()
    return loss, task_losses


def _labelled_rows(tasks: dict[str, dict], labels: dict[str, torch.Tensor], batch_size: int):
    """For `labels` given as `{task: tensor}`: each task's labelled rows (a boolean mask), for the tasks that
    have at least one. Missing: -100 in integer tensors and in a single-label task's class ids, NaN in float
    tensors; a multi-label or multi-output row with a missing value anywhere is missing."""
    unknown = [name for name in labels if name not in tasks]
    if unknown:
        raise ValueError(f"labels name unknown task(s) {unknown}; known tasks: {list(tasks)}")
    rows_per_task = {}
    for name, values in labels.items():
        if values.shape[:1] != (batch_size,):
            raise ValueError(
                f"labels[{name!r}] has shape {tuple(values.shape)}: it needs one row per example ({batch_size})"
            )
        missing = (
            torch.isnan(values) if values.is_floating_point() else torch.zeros_like(values, dtype=torch.bool)
        )
        if not values.is_floating_point() or tasks[name]["problem_type"] == "single_label_classification":
            missing = missing | (values == -100)
        rows = ~missing.reshape(len(values), -1).any(-1)
        if rows.any():
            rows_per_task[name] = rows
    return rows_per_task


def _task_loss(
    name: str,
    spec: dict,
    logits: torch.Tensor,
    labels: torch.Tensor,
    reduction: str = "mean",
    losses: dict | None = None,
) -> torch.Tensor:
    """The task's loss over the batch (`reduction="mean"`), or one value per row (`"none"`; NaN for a row whose
    label is -100), whose mean over the rows that count is the batch's loss. A task naming a `loss` gets
    `losses[loss]` (the model's LOSSES), after its labels are checked."""
    problem_type, num_labels = spec["problem_type"], spec["num_labels"]
    per_row = reduction == "none"
    custom = spec.get("loss")
    if problem_type == "sentence_similarity" and custom is None:
        return _cosent_loss(logits, labels)
    if problem_type == "single_label_classification":
        labels = labels.long().view(-1)
        bad = (labels != -100) & ((labels < 0) | (labels >= num_labels))
        if bad.any():
            raise ValueError(
                f"Task {name!r}: labels must be in [0, {num_labels}) (labels {spec['labels']}), "
                f"got {labels[bad].unique().tolist()}"
            )
    if custom is not None:
        return (LOSSES if losses is None else losses)[custom].fn(logits, labels, spec, reduction)
    if problem_type == "single_label_classification":
        if spec.get("class_weights") is not None:
            return _class_weighted_cross_entropy(logits, labels, spec["class_weights"], per_row)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction=reduction)
        return torch.where(labels == -100, float("nan"), loss) if per_row else loss
    if problem_type == "multi_label_classification":
        if labels.shape != logits.shape:
            raise ValueError(
                f"Task {name!r}: multi-label targets must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}"
            )
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction=reduction)
        return loss.mean(-1) if per_row else loss
    # regression: one output per row compares with a (batch,) target
    predictions = logits.float().squeeze(-1) if num_labels == 1 else logits.float()
    loss = F.mse_loss(predictions, labels.float().view_as(predictions), reduction=reduction)
    return loss.reshape(len(loss), -1).mean(-1) if per_row else loss


def _cosent_loss(similarities: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """CoSENT (Su, 2022; sentence-transformers' CoSENTLoss): log(1 + sum over pairs (i, j) with score_i > score_j
    of exp(scale * (cos_j - cos_i))), which asks every better-scored pair for a higher cosine. `similarities` and
    `scores` hold one value per row, the first half for the pairs (the second half repeats them)."""
    half = len(similarities) // 2
    cosine, target = similarities[:half].float(), scores[:half].float().view(-1)
    differences = COSENT_SCALE * (cosine[None, :] - cosine[:, None])  # [i, j] = scale * (cos_j - cos_i)
    ranked = target[:, None] > target[None, :]
    differences = differences.masked_fill(~ranked, float("-inf"))
    return torch.logsumexp(torch.cat([differences.new_zeros(1), differences.view(-1)]), dim=0)


def _class_weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: list[float], per_row: bool
) -> torch.Tensor:
    """Each row's cross-entropy times its label's weight; the batch's loss is their mean over the rows that
    count. Not divided by the sum of the weights, as `F.cross_entropy(weight=...)` does: so each row's loss
    stands alone, and a mean over rows gives the same value however the rows are split into batches,
    gradient-accumulation steps or DDP shards (evaluation averages `per_example_loss` over a data set)."""
    losses = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")
    weights = torch.tensor(class_weights, dtype=losses.dtype, device=losses.device)
    counted = labels != -100
    losses = losses * weights[labels.clamp(min=0)]  # ignored rows: their loss is 0 and their "label" 0
    if per_row:
        return torch.where(counted, losses, float("nan"))
    return losses.sum() / counted.sum()  # NaN when no row counts, as F.cross_entropy's mean


__all__ = ["HydraBertModel", "HydraBertOutput", "HydraBertPreTrainedModel"]
