"""Keeping the sentence embedding through task training: a frozen copy of the model as it was before training
(the teacher) embeds each training batch, and the loss gains `weight * mean(1 - cos(student, teacher))`.

Classification losses pull the embedding towards what separates their labels, and a general-purpose embedding
(search, clustering, deduplication) degrades: on STS-B, the demo's two tasks took MiniLM's embedding from 0.82 to
0.47 Spearman (docs/embeddings.md). Distilling the starting encoder's own embeddings of the training sentences
needs no pair data, so any run can keep its embedding; a sentence-similarity task (pairs with scores) is the
other mechanism, for users who have such pairs.

The teacher lives beside the model, never inside it: it is not saved, not wrapped by DDP (it takes no
gradient) and not in the optimizer. With the frozen-encoder feature cache the encoder does not change, so the
teacher only re-projects the cached features (no second encoder pass).
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from .data.collation import MODEL_INPUTS


class EmbeddingTeacher:
    """The model's embedding as training starts, and the preservation term against it."""

    def __init__(self, model, weight: float):
        if not weight > 0:
            raise ValueError(f"embedding_preservation_weight must be > 0 for a teacher, got {weight}")
        self.weight = float(weight)
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def embeddings(self, inputs: dict, encoder_features: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's embedding of the batch's sentences (from cached encoder features when given)."""
        reference = next(iter(inputs.values())) if encoder_features is None else encoder_features
        if self.model.device != reference.device:
            self.model.to(reference.device)
        if encoder_features is not None:
            return self.model(encoder_features=encoder_features).sentence_embedding
        token_inputs = {name: inputs[name] for name in MODEL_INPUTS if inputs.get(name) is not None}
        return self.model(**token_inputs).sentence_embedding

    def loss(self, student: torch.Tensor, inputs: dict, encoder_features: torch.Tensor | None = None):
        """(weighted term to add to the loss, unweighted mean 1 - cosine for logging)."""
        target = self.embeddings(inputs, encoder_features)
        distance = (1.0 - F.cosine_similarity(student.float(), target.float(), dim=-1)).mean()
        return self.weight * distance, distance


__all__ = ["EmbeddingTeacher"]
