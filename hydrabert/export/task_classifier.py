"""One task of a hydrabert model as the encoder family's own `*ForSequenceClassification`.

hydrabert's embedding, `tanh(Linear(h_[CLS]))`, is what BERT's pooler computes, and a head on it is
`BertForSequenceClassification`'s classifier; RoBERTa's classification head is the same function
(dense + tanh on the first token, then a linear layer). So the export copies weights and checks the
logits: no conversion can drift, because a family whose classifier computes something else fails
the check with an error rather than giving a subtly different model.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from ._common import ExportError, check_hydrabert_model, source_name

# Logits of the export and of hydrabert may differ by at most this (float32).
LOGITS_TOLERANCE = 1e-5
CARD_TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "model_cards", "exported_task.md")


def export_task(
    model, task: str, save_directory, tokenizer=None, source: str | None = None, model_id: str | None = None
):
    """Write `task` as a standard classifier that `AutoModelForSequenceClassification.from_pretrained`
    and `pipeline("text-classification")` load without remote code.

    `source` names the hydrabert model in the card (default: where `model` was loaded from); `model_id`
    is the export's own Hub id, for the card's usage snippet. Returns the exported model (in eval mode).
    """
    check_hydrabert_model(model)
    model._check_task(task)
    check_exactly_expressible(model.config)
    classifier = build_task_classifier(model, task)
    os.makedirs(save_directory, exist_ok=True)
    classifier.save_pretrained(save_directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)
    _task_card(model, task, classifier, source or source_name(model), model_id, tokenizer is not None).save(
        os.path.join(save_directory, "README.md")
    )
    return classifier


def build_task_classifier(model, task: str):
    """The `*ForSequenceClassification` holding the encoder, the projection and `task`'s head."""
    check_exactly_expressible(model.config)
    spec = model.config.tasks[task]
    config = copy.deepcopy(model.config.encoder)
    config.id2label = dict(enumerate(spec["labels"]))
    config.label2id = {label: i for i, label in enumerate(spec["labels"])}
    config.problem_type = spec["problem_type"]
    # Used only when fine-tuning further: the same dropout the hydrabert head had.
    config.classifier_dropout = model.config.head_dropout()
    config.architectures = None
    family = config.model_type
    try:
        classifier = AutoModelForSequenceClassification.from_config(config)
    except ValueError as err:
        raise ExportError(
            f"The {family!r} family has no *ForSequenceClassification in transformers, so task {task!r} cannot "
            "be exported as a standard classifier; export_onnx exports every task of any hydrabert model."
        ) from err
    classifier.to(dtype=model.pooler.dense.weight.dtype).eval()
    _copy_weights(model, task, classifier)
    _check_same_logits(model, task, classifier)
    return classifier


def check_exactly_expressible(config) -> None:
    """The hydrabert settings a standard classifier cannot express, each with its reason."""
    hidden = config.encoder.hidden_size
    reasons = []
    if config.pooling != "cls":
        reasons.append(f"pooling={config.pooling!r}: the standard classifiers read the first token only")
    if config.embedding_activation != "tanh":
        reasons.append(f"embedding_activation={config.embedding_activation!r}: their pooler applies tanh")
    if config.adapter_size:
        reasons.append(
            f"adapter_size={config.adapter_size}: they have no adapter between pooler and classifier"
        )
    if config.head_input != "embedding":
        reasons.append(f"head_input={config.head_input!r}: their classifier reads the pooler's output only")
    if config.embedding_dim != hidden:
        reasons.append(
            f"embedding_dim={config.embedding_dim} != hidden_size={hidden}: their pooler keeps the width"
        )
    if reasons:
        raise ExportError(
            "Cannot export a task as a standard *ForSequenceClassification without changing its outputs: "
            + "; ".join(reasons)
            + ". export_onnx exports every task of this model exactly"
            + ("" if config.adapter_size else ", and export_sentence_transformer its sentence embedding")
            + "."
        )


def _copy_weights(model, task: str, classifier) -> None:
    prefix = classifier.base_model_prefix
    base = getattr(classifier, prefix)
    if model.config.tasks[task].get("head", "linear") != "linear":
        raise ExportError(
            f"Task {task!r} has a {model.config.tasks[task]['head']!r} head; a standard *ForSequenceClassification "
            "has one Linear classifier. export_onnx exports every task of this model exactly."
        )
    head = model.heads[task]
    state = {f"{prefix}.{key}": value for key, value in model.encoder.state_dict().items()}
    pooler_dense = getattr(getattr(base, "pooler", None), "dense", None)
    classification_head = getattr(classifier, "classifier", None)
    if isinstance(pooler_dense, nn.Linear) and isinstance(classification_head, nn.Linear):
        # BERT and the families sharing BertPooler: pooler.dense -> dropout -> classifier.
        projection, output = f"{prefix}.pooler.dense", "classifier"
    elif isinstance(getattr(classification_head, "dense", None), nn.Linear) and isinstance(
        getattr(classification_head, "out_proj", None), nn.Linear
    ):
        # RoBERTa-style: classifier.dense -> tanh -> classifier.out_proj, on the first token.
        projection, output = "classifier.dense", "classifier.out_proj"
    else:
        raise ExportError(
            f"{type(classifier).__name__} has neither a pooler (dense + tanh on the first token) feeding a linear "
            f"classifier nor a dense + out_proj classification head, so task {task!r} has no exact equivalent in "
            "it; export_onnx exports every task of any hydrabert model."
        )
    for name, source in ((projection, model.pooler.dense), (output, head)):
        state[f"{name}.weight"] = source.weight
        state[f"{name}.bias"] = source.bias
    missing, unexpected = classifier.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(
            f"{type(classifier).__name__}'s weights do not match hydrabert's encoder + task {task!r}: "
            f"missing {sorted(missing)}, unexpected {sorted(unexpected)}; export_onnx exports any hydrabert model."
        )


@torch.inference_mode()
def _check_same_logits(model, task: str, classifier) -> None:
    """Proof on a padded random batch that the copy computes hydrabert's function, not a lookalike
    (ELECTRA's head, for one, has the same shapes but uses GELU)."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.encoder.vocab_size
    input_ids = torch.randint(0, vocab, (3, 9), generator=generator).to(model.device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    was_training = model.training
    model.eval()
    try:
        expected = model(input_ids=input_ids, attention_mask=attention_mask, task=task).logits
    finally:
        model.train(was_training)
    got = classifier.to(model.device)(input_ids=input_ids, attention_mask=attention_mask).logits
    difference = (got.float() - expected.float()).abs().max().item()
    tolerance = LOGITS_TOLERANCE if expected.dtype == torch.float32 else 1e-2
    if not difference <= tolerance:
        raise ExportError(
            f"{type(classifier).__name__} computes task {task!r}'s logits differently from hydrabert (max abs "
            f"difference {difference:.2e}): the family's classifier is not dense + tanh on the first token. "
            "export_onnx exports every task of any hydrabert model."
        )


def _task_card(model, task: str, classifier, source: str | None, model_id: str | None, has_tokenizer: bool):
    from huggingface_hub import ModelCard, ModelCardData

    spec = model.config.tasks[task]
    is_hub_id = bool(source) and not os.path.exists(source) and source.count("/") == 1
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=source if is_hub_id else None,
        tags=["hydrabert", "text-classification", "hydrabert-export"],
    )
    return ModelCard.from_template(
        card_data,
        template_path=CARD_TEMPLATE,
        task=task,
        source=source,
        source_is_hub_id=is_hub_id,
        architecture=type(classifier).__name__,
        labels=spec["labels"],
        problem_type=spec["problem_type"],
        other_tasks=[name for name in model.config.tasks if name != task],
        model_id=model_id or "path/to/this/folder",
        has_tokenizer=has_tokenizer,
    )


__all__ = ["LOGITS_TOLERANCE", "build_task_classifier", "check_exactly_expressible", "export_task"]
