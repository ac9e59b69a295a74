"""transformers' own ModelTesterMixin and ConfigTester (from the installed release's sdist, see
transformers_suite.py) run against HydraBertModel, with a tiny BERT tester written like
transformers' tests/models/bert BertModelTester. Every skip or override below states its reason
in one line; docs/conformance.md lists them."""

from __future__ import annotations

import contextlib
import os
import unittest

import pytest
from transformers_suite import REQUIRE_ENV, TransformersTestsUnavailable, ensure_transformers_tests

try:
    ensure_transformers_tests()
except TransformersTestsUnavailable as err:
    if os.environ.get(REQUIRE_ENV):
        raise
    pytest.skip(f"transformers' common tests cannot be obtained: {err}", allow_module_level=True)

import torch  # noqa: E402
from transformers import BertConfig  # noqa: E402
from transformers.testing_utils import torch_device  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import (  # noqa: E402
    ModelTesterMixin,
    ids_tensor,
    random_attention_mask,
)

from hydrabert import HydraBertConfig, HydraBertModel  # noqa: E402

TASKS = {"sentiment": {"labels": ["negative", "positive"]}, "topic": {"num_labels": 3, "weight": 0.5}}


class HydraBertModelTester:
    """A tiny random HydraBERT: BertModelTester's encoder sizes, two tasks, `hydra` = HydraBertConfig
    fields on top (pooling, adapter, embedding size)."""

    def __init__(
        self,
        parent,
        batch_size=13,
        seq_length=7,
        is_training=True,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        type_vocab_size=16,
        hydra=None,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.type_vocab_size = type_vocab_size
        self.hydra = dict(hydra or {})

    def get_config(self) -> HydraBertConfig:
        encoder = BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            max_position_embeddings=512,
            type_vocab_size=self.type_vocab_size,
            initializer_range=0.02,
        )
        return HydraBertConfig(encoder=encoder, tasks={k: dict(v) for k, v in TASKS.items()}, **self.hydra)

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        token_type_ids = ids_tensor([self.batch_size, self.seq_length], self.type_vocab_size)
        return self.get_config(), input_ids, token_type_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, token_type_ids, attention_mask = self.prepare_config_and_inputs()
        inputs = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
        return config, inputs

    def create_and_check_model(self, config, input_ids, token_type_ids, attention_mask):
        model = HydraBertModel(config).eval()
        with torch.no_grad():
            result = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        self.parent.assertEqual(result.sentence_embedding.shape, (self.batch_size, config.embedding_dim))
        self.parent.assertEqual(
            {name: tuple(t.shape) for name, t in result.logits.items()},
            {name: (self.batch_size, spec["num_labels"]) for name, spec in config.tasks.items()},
        )


class HydraBertModelTest(ModelTesterMixin, unittest.TestCase):
    """CLS pooling, no adapter, embedding size = hidden size."""

    all_model_classes = (HydraBertModel,)
    _is_composite = True  # a composite model: the encoder is a sub-config (`config.encoder`)
    # Our files carry no copyright year, which the mixin reads as "before 2023" and would skip this test for.
    test_can_init_all_missing_weights_before_2023 = True
    hydra_config: dict = {}

    def setUp(self):
        self.model_tester = HydraBertModelTester(self, hydra=self.hydra_config)
        self.config_tester = ConfigTester(self, config_class=HydraBertConfig, has_text_modality=False)

    # The task `_prepare_for_class` names, while a test runs under `_one_task()`.
    _task: str | None = None

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """As BertModelTest's: the mixin knows no labels for a multi-task model, so training tests get what the
        trainer passes (`task_ids`, one per row, and `labels`); `_one_task()` adds `task=`."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            batch_size = self.model_tester.batch_size
            inputs_dict["task_ids"] = torch.arange(batch_size, device=torch_device) % len(TASKS)
            inputs_dict["labels"] = torch.zeros(batch_size, dtype=torch.long, device=torch_device)
        elif self._task is not None:
            inputs_dict["task"] = self._task
        return inputs_dict

    @contextlib.contextmanager
    def _one_task(self, task="topic"):
        self._task = task
        try:
            yield
        finally:
            self._task = None

    def test_determinism(self):
        # Override: outputs[0] is the dict of every task's logits; with `task=` it is that task's tensor.
        with self._one_task():
            super().test_determinism()

    def test_retain_grad_hidden_states_attentions(self):
        # Override: outputs[0] is the dict of every task's logits; with `task=` it is that task's tensor.
        with self._one_task():
            super().test_retain_grad_hidden_states_attentions()

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())


class HydraBertAdapterMeanPoolingTest(HydraBertModelTest):
    """Adapter + masked mean pooling + an embedding size other than the encoder's hidden size."""

    hydra_config = {"pooling": "mean", "adapter_size": 8, "embedding_dim": 24}


__all__ = []
