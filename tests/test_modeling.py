"""HydraBertConfig and HydraBertModel: shapes, losses, errors, save/load and remote code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_ENCODER, tiny_config
from torch.nn import functional as F

from hydrabert import HydraBertConfig, HydraBertModel


def _batch(tokenizer, sentences=("the film was good", "what is a question", "bad", "how great")):
    return tokenizer(list(sentences), padding=True, return_tensors="pt")


# ------------------------------------------------------------------------------------------ config
def test_config_fills_task_defaults_and_sorts_tasks():
    config = tiny_config(tasks={"zeta": {"num_labels": 3}, "alpha": {"labels": ["no", "yes"], "weight": 2}})
    assert list(config.tasks) == ["alpha", "zeta"]
    assert config.tasks["zeta"] == {
        "num_labels": 3,
        "labels": ["LABEL_0", "LABEL_1", "LABEL_2"],
        "problem_type": "single_label_classification",
        "weight": 1.0,
        "class_weights": None,
        "head": "linear",
        "loss": None,
    }
    assert config.tasks["alpha"]["weight"] == 2.0
    assert config.embedding_dim == TINY_ENCODER["hidden_size"]
    assert config.encoder.model_type == "bert"


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(pooling="mean", adapter_size=8, embedding_dim=16)
    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["model_type"] == "hydrabert"
    assert list(on_disk["tasks"]) == sorted(on_disk["tasks"])
    loaded = HydraBertConfig.from_pretrained(tmp_path)
    assert loaded.tasks == config.tasks
    assert (loaded.pooling, loaded.adapter_size, loaded.embedding_dim) == ("mean", 8, 16)
    assert loaded.encoder.hidden_size == TINY_ENCODER["hidden_size"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pooling": "max"}, "pooling"),
        ({"embedding_activation": "relu"}, "embedding_activation"),
        ({"head_input": "cls"}, "head_input"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"classifier_dropout": 1.5}, "classifier_dropout"),
        ({"adapter_size": -4}, "adapter_size"),
        ({"tasks": {"x": {"num_labels": 0}}}, "num_labels"),
        ({"tasks": {"x": {}}}, "num_labels"),
        ({"tasks": {"x": {"num_labels": 1}}}, "at least 2 labels"),
        ({"tasks": {"x": {"num_labels": 3, "labels": ["a", "b"]}}}, "num_labels=3"),
        ({"tasks": {"x": {"labels": ["a", "a"]}}}, "duplicates"),
        ({"tasks": {"x": {"num_labels": 2, "problem_type": "ranking"}}}, "problem_type"),
        ({"tasks": {"x": {"num_labels": 2, "weight": -1}}}, "weight"),
        ({"tasks": {"x": {"num_labels": 2, "colour": "red"}}}, "unknown keys"),
        ({"tasks": {"bad name": {"num_labels": 2}}}, "identifier"),
    ],
)
def test_invalid_config_values_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_regression_task_defaults_to_one_output():
    config = tiny_config(tasks={"score": {"problem_type": "regression"}})
    assert config.tasks["score"]["num_labels"] == 1


# ----------------------------------------------------------------------------------------- forward
def test_one_encoder_pass_yields_every_tasks_logits(tiny_model, tiny_tokenizer):
    calls = []
    tiny_model.encoder.register_forward_hook(lambda *args: calls.append(1))
    batch = _batch(tiny_tokenizer)
    out = tiny_model(**batch)
    assert len(calls) == 1
    assert set(out.logits) == {"sentiment", "topic"}
    assert out.logits["sentiment"].shape == (4, 2)
    assert out.logits["topic"].shape == (4, 3)
    assert out.sentence_embedding.shape == (4, 32)
    single = tiny_model(**batch, task="topic")
    torch.testing.assert_close(single.logits, out.logits["topic"])


def test_unknown_task_lists_the_known_tasks(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"Unknown task 'sport'.*\['sentiment', 'topic'\]"):
        tiny_model(**_batch(tiny_tokenizer), task="sport")
    with pytest.raises(ValueError, match="known tasks"):
        tiny_model.remove_task("sport")


def test_label_out_of_range_raises_before_the_loss(tiny_model, tiny_tokenizer, monkeypatch):
    import hydrabert.modeling_hydrabert as modeling

    calls = []
    monkeypatch.setattr(modeling.F, "cross_entropy", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"Task 'sentiment': labels must be in \[0, 2\).*got \[2\]"):
        tiny_model(**_batch(tiny_tokenizer), task="sentiment", labels=torch.tensor([0, 1, 2, 1]))
    assert calls == []


def test_labels_without_task_are_ambiguous(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="needs `task`"):
        tiny_model(**_batch(tiny_tokenizer), labels=torch.tensor([0, 1, 0, 1]))


def test_mixed_task_batch_averages_each_tasks_loss_with_its_weight(tiny_model, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    task_ids = torch.tensor([0, 1, 1, 0])  # sentiment, topic, topic, sentiment
    labels = torch.tensor([1, 2, 0, 0])
    out = tiny_model(**batch, task_ids=task_ids, labels=labels)
    logits = tiny_model(**batch).logits
    sentiment = F.cross_entropy(logits["sentiment"][[0, 3]], labels[[0, 3]])
    topic = F.cross_entropy(logits["topic"][[1, 2]], labels[[1, 2]])
    expected = (1.0 * sentiment + 0.5 * topic) / 2
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.task_losses["topic"], topic)


def _weighted_cross_entropy(logits, labels, class_weights):
    """By hand: each row's -log p(label), times its label's weight, averaged over the rows."""
    rows = -torch.log_softmax(logits.float(), -1).gather(1, labels.view(-1, 1)).squeeze(1)
    return (torch.tensor(class_weights)[labels] * rows).mean()


def test_balanced_class_weights_give_the_hand_computed_weighted_cross_entropy(tiny_tokenizer):
    from sklearn.utils.class_weight import compute_class_weight

    train_labels = np.array([0, 0, 0, 0, 0, 1])
    balanced = compute_class_weight("balanced", classes=np.arange(2), y=train_labels).tolist()
    assert balanced == pytest.approx([6 / (2 * 5), 6 / (2 * 1)])  # n_rows / (n_labels * rows of the label)
    labels = torch.tensor([0, 1, 1, 0])
    torch.manual_seed(0)
    model = HydraBertModel(
        tiny_config(tasks={"sentiment": {"num_labels": 2, "class_weights": balanced}})
    ).eval()
    batch = _batch(tiny_tokenizer)
    out = model(**batch, task="sentiment", labels=labels)
    expected = _weighted_cross_entropy(out.logits, labels, balanced)
    torch.testing.assert_close(out.loss, expected)
    # Not F.cross_entropy(weight=...), which divides by the sum of the rows' weights instead of their count.
    normalised = F.cross_entropy(out.logits, labels, weight=torch.tensor(balanced))
    assert not torch.isclose(out.loss, normalised)
    # Rows stay additive: an ignored row is NaN per row and left out of the mean; the rest average to the loss.
    ignored = torch.tensor([0, 1, -100, 0])
    rows = model.per_example_loss("sentiment", out.logits, ignored)
    assert torch.isnan(rows[2]) and not torch.isnan(rows[[0, 1, 3]]).any()
    kept = torch.tensor([0, 1, 3])
    torch.testing.assert_close(
        model(**batch, task="sentiment", labels=ignored).loss,
        _weighted_cross_entropy(out.logits[kept], ignored[kept], balanced),
    )
    torch.testing.assert_close(rows[kept].mean(), model(**batch, task="sentiment", labels=ignored).loss)


def test_mixed_batch_uses_each_tasks_own_class_weights(tiny_tokenizer):
    tasks = {
        "sentiment": {"num_labels": 2, "class_weights": [1.0, 3.0]},
        "topic": {"num_labels": 3, "weight": 0.5, "class_weights": [0.5, 1.0, 2.0]},
    }
    torch.manual_seed(0)
    model = HydraBertModel(tiny_config(tasks=tasks)).eval()
    batch = _batch(tiny_tokenizer)
    task_ids = torch.tensor([0, 1, 1, 0])  # sentiment, topic, topic, sentiment
    labels = torch.tensor([1, 2, 0, 0])
    out = model(**batch, task_ids=task_ids, labels=labels)
    logits = model(**batch).logits
    sentiment = _weighted_cross_entropy(logits["sentiment"][[0, 3]], labels[[0, 3]], [1.0, 3.0])
    topic = _weighted_cross_entropy(logits["topic"][[1, 2]], labels[[1, 2]], [0.5, 1.0, 2.0])
    torch.testing.assert_close(out.task_losses["sentiment"], sentiment)
    torch.testing.assert_close(out.task_losses["topic"], topic)
    torch.testing.assert_close(out.loss, (1.0 * sentiment + 0.5 * topic) / 2)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"num_labels": 2, "class_weights": [1.0]}, r"has 1 weights but the task has 2 labels"),
        ({"num_labels": 2, "class_weights": [1.0, -1.0]}, r"finite numbers >= 0, got -1\.0"),
        ({"num_labels": 2, "class_weights": [0, 0]}, r"are all 0"),
        ({"num_labels": 2, "class_weights": "balanced"}, r"'balanced' needs the training data"),
        (
            {"num_labels": 2, "problem_type": "multi_label_classification", "class_weights": [1, 2]},
            r"for single-label classification tasks, not multi_label_classification",
        ),
    ],
)
def test_config_rejects_bad_class_weights(spec, pattern):
    with pytest.raises(ValueError, match=r"tasks\['t'\]\.class_weights .*" + pattern):
        tiny_config(tasks={"t": spec})


def test_class_weights_travel_with_the_saved_config(tmp_path):
    model = HydraBertModel(tiny_config(tasks={"t": {"num_labels": 3, "class_weights": [1, 2.5, 0.5]}}))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tasks"]["t"]["class_weights"] == [
        1.0,
        2.5,
        0.5,
    ]
    assert HydraBertModel.from_pretrained(tmp_path).config.tasks["t"]["class_weights"] == [1.0, 2.5, 0.5]
    model.add_task("u", labels=["a", "b"], class_weights=[2, 1])
    assert model.config.tasks["u"]["class_weights"] == [2.0, 1.0]


def test_task_ids_out_of_range_raise(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"task_ids must be in \[0, 2\)"):
        tiny_model(
            **_batch(tiny_tokenizer), task_ids=torch.tensor([0, 5, 1, 0]), labels=torch.zeros(4).long()
        )


def test_every_parameter_gets_a_gradient_even_for_absent_tasks(tiny_tokenizer):
    """DDP without find_unused_parameters needs a gradient for every parameter on every step."""
    model = HydraBertModel(tiny_config(adapter_size=4)).train()
    out = model(**_batch(tiny_tokenizer), task="sentiment", labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert torch.count_nonzero(model.heads["topic"].weight.grad) == 0


def test_multi_label_and_regression_losses(tiny_tokenizer):
    config = tiny_config(
        tasks={
            "tags": {"num_labels": 3, "problem_type": "multi_label_classification"},
            "score": {"problem_type": "regression"},
        }
    )
    model = HydraBertModel(config).eval()
    batch = _batch(tiny_tokenizer)
    targets = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]]).float()
    out = model(**batch, task="tags", labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))
    values = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = model(**batch, task="score", labels=values)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), values))
    with pytest.raises(ValueError, match="multi-label targets must have shape"):
        model(**batch, task="tags", labels=torch.zeros(4).long())


def test_cls_embedding_is_tanh_of_the_projected_cls_state(tiny_model, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    out = tiny_model(**batch)
    h_cls = tiny_model.encoder(**batch).last_hidden_state[:, 0]
    dense = tiny_model.pooler.dense
    torch.testing.assert_close(out.sentence_embedding, torch.tanh(h_cls @ dense.weight.T + dense.bias))


def test_mean_pooling_ignores_padding(tiny_tokenizer):
    model = HydraBertModel(tiny_config(pooling="mean")).eval()
    alone = model(**tiny_tokenizer(["good film"], return_tensors="pt")).sentence_embedding
    padded = model(
        **tiny_tokenizer(["good film", "the movie was a great film"], padding=True, return_tensors="pt")
    )
    torch.testing.assert_close(padded.sentence_embedding[0], alone[0], atol=1e-5, rtol=1e-5)


def test_sdpa_attention_is_used(tiny_model):
    assert tiny_model.config._attn_implementation == "sdpa"
    assert tiny_model.encoder.config._attn_implementation == "sdpa"


def test_adapter_starts_as_identity(tiny_tokenizer):
    torch.manual_seed(0)
    plain = HydraBertModel(tiny_config()).eval()
    with_adapter = HydraBertModel(tiny_config(adapter_size=8)).eval()
    with_adapter.load_state_dict(plain.state_dict(), strict=False)
    batch = _batch(tiny_tokenizer)
    torch.testing.assert_close(with_adapter(**batch).sentence_embedding, plain(**batch).sentence_embedding)


# ------------------------------------------------------------------------------------------- tasks
def test_add_and_remove_task(tiny_model, tiny_tokenizer):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.add_task("intent", labels=["book", "cancel", "greet"])
    assert tiny_model.task_names == ["intent", "sentiment", "topic"]
    assert tiny_model.config.tasks["intent"]["num_labels"] == 3
    assert tiny_model(**_batch(tiny_tokenizer), task="intent").logits.shape == (4, 3)
    for name, value in before.items():
        torch.testing.assert_close(tiny_model.state_dict()[name], value)
    with pytest.raises(ValueError, match="already exists"):
        tiny_model.add_task("intent", num_labels=2)
    tiny_model.remove_task("topic")
    assert tiny_model.task_names == ["intent", "sentiment"]
    assert "topic" not in tiny_model.heads


def test_layer_depths_cover_embeddings_blocks_and_heads(tiny_model):
    depths = {name: tiny_model.get_layer_depth(name) for name, _ in tiny_model.named_parameters()}
    assert depths["encoder.embeddings.word_embeddings.weight"] == 0
    assert depths["encoder.encoder.layer.0.attention.self.query.weight"] == 1
    assert depths["encoder.encoder.layer.1.output.dense.bias"] == 2
    assert depths["pooler.dense.weight"] == 3
    assert depths["heads.topic.weight"] == 3
    assert set(depths.values()) == {0, 1, 2, 3}


# --------------------------------------------------------------------------------------- inference
def test_encode_returns_input_order_and_matches_forward(tiny_model, tiny_tokenizer):
    sentences = ["good", "the film was a great film", "what", "how was the movie"]
    embeddings = tiny_model.encode(sentences, tiny_tokenizer, batch_size=3)
    expected = tiny_model(**_batch(tiny_tokenizer, sentences)).sentence_embedding
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-5)
    normalized = tiny_model.encode(sentences, tiny_tokenizer, normalize=True)
    torch.testing.assert_close(normalized.norm(dim=-1), torch.ones(4))
    assert tiny_model.encode("good", tiny_tokenizer).shape == (32,)
    assert tiny_model.encode([], tiny_tokenizer).shape == (0, 32)


def test_encode_restores_training_mode(tiny_model, tiny_tokenizer):
    tiny_model.train()
    tiny_model.encode(["good"], tiny_tokenizer)
    assert tiny_model.training


def test_predict_names_labels_per_task(tiny_model, tiny_tokenizer):
    sentences = ["good film", "what is the answer", "bad"]
    predictions = tiny_model.predict(sentences, tiny_tokenizer)
    with torch.no_grad():
        logits = tiny_model(**_batch(tiny_tokenizer, sentences)).logits
    for row, prediction in enumerate(predictions):
        assert set(prediction) == {"sentiment", "topic"}
        probs = logits["sentiment"][row].softmax(-1)
        assert prediction["sentiment"]["label"] == ["negative", "positive"][int(probs.argmax())]
        assert prediction["sentiment"]["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    only = tiny_model.predict("good", tiny_tokenizer, tasks="topic")
    assert set(only) == {"topic"} and only["topic"]["label"].startswith("LABEL_")
    with pytest.raises(ValueError, match="Unknown task"):
        tiny_model.predict(["good"], tiny_tokenizer, tasks=["sport"])


# --------------------------------------------------------------------------------------- save/load
def test_save_and_load_give_identical_outputs(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert {"configuration_hydrabert.py", "modeling_hydrabert.py"} <= set(os.listdir(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hydrabert.HydraBertConfig",
        "AutoModel": "modeling_hydrabert.HydraBertModel",
    }
    loaded = HydraBertModel.from_pretrained(tmp_path).eval()
    batch = _batch(tiny_tokenizer)
    for task, logits in tiny_model(**batch).logits.items():
        torch.testing.assert_close(loaded(**batch).logits[task], logits)


def test_remote_code_loads_without_hydrabert(tiny_model, tiny_tokenizer, tmp_path):
    """A machine that never installed hydrabert: AutoModel + trust_remote_code, in a fresh process."""
    model_dir, tok_dir = tmp_path / "model", tmp_path / "tok"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(tok_dir)
    sentences = ["good film", "what is the answer"]
    batch = tiny_tokenizer(sentences, padding=True, return_tensors="pt")
    expected = tiny_model(**batch)
    torch.save(
        {"logits": expected.logits, "embedding": expected.sentence_embedding, "batch": dict(batch)},
        tmp_path / "expected.pt",
    )
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hydrabert"] = None  # any import of hydrabert now fails
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        out = model(**expected["batch"])
        for task, logits in expected["logits"].items():
            torch.testing.assert_close(out.logits[task], logits)
        torch.testing.assert_close(out.sentence_embedding, expected["embedding"])
        print("REMOTE-OK", sorted(out.logits))
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-OK ['sentiment', 'topic']" in result.stdout


def test_hub_files_import_only_torch_transformers_and_each_other():
    import ast

    import hydrabert

    folder = os.path.dirname(hydrabert.__file__)
    for filename in ("configuration_hydrabert.py", "modeling_hydrabert.py"):
        tree = ast.parse(open(os.path.join(folder, filename)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if (
                    node.level
                ):  # relative: only flat imports of each other (`from .configuration_hydrabert ...`)
                    assert node.level == 1 and node.module in (
                        "configuration_hydrabert",
                        "pipeline_hydrabert",
                    ), (
                        filename,
                        node.module,
                    )
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= {
                "torch",
                "transformers",
                "numpy",  # a dependency of transformers: the configuration's torch-free post-processing
                "tqdm",
                "__future__",
                "contextlib",
                "dataclasses",
                "inspect",
                "json",
                "math",
                "os",
                "re",
            }, (
                filename,
                roots,
            )


# ------------------------------------------------------------------------------ pretrained encoders
def test_from_encoder_pretrained_minilm_loads_every_encoder_weight(minilm):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    model = HydraBertModel.from_encoder_pretrained(
        minilm, tasks={"sentiment": {"labels": ["neg", "pos"]}, "topic": {"num_labels": 6}}
    ).eval()
    checkpoint = load_file(os.path.join(minilm, "model.safetensors"))
    own = model.state_dict()
    for key, value in checkpoint.items():
        if key.startswith(
            "pooler."
        ):  # a sentence-transformers checkpoint: its embedding never read the pooler
            continue
        target = "encoder." + key
        if target in own:
            torch.testing.assert_close(own[target], value, msg=key)
        else:
            assert key == "embeddings.position_ids", f"checkpoint weight {key} was not loaded"
    # all-MiniLM-L6-v2 is a sentence-transformers checkpoint (mean pooling): its own embedding, through an
    # identity projection and tanh.
    assert model.config.pooling == "mean"
    torch.testing.assert_close(own["pooler.dense.weight"], torch.eye(384))
    new = {k for k in own if not k.startswith("encoder.")}
    assert new == {
        "pooler.dense.weight",
        "pooler.dense.bias",
        "heads.sentiment.weight",
        "heads.sentiment.bias",
        "heads.topic.weight",
        "heads.topic.bias",
    }

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    batch = tokenizer(
        ["a gripping, beautifully made film", "what is the capital of peru?"],
        padding=True,
        return_tensors="pt",
    )
    embedding = model(**batch).sentence_embedding
    assert embedding.abs().max() < 1
    reference = AutoModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        states = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(
        embedding, torch.tanh((states * mask).sum(1) / mask.sum(1)), atol=1e-5, rtol=1e-5
    )

    # Asked for [CLS], still not the checkpoint's pooler, which its sentence embedding never used (on STS-B,
    # tanh(h_[CLS]) scores 0.785 against 0.731 through the pooler: docs/embeddings.md).
    cls_model = HydraBertModel.from_encoder_pretrained(minilm, tasks={}, pooling="cls").eval()
    torch.testing.assert_close(
        cls_model(**batch).sentence_embedding, torch.tanh(states[:, 0]), atol=1e-5, rtol=1e-5
    )


def test_from_encoder_pretrained_local_checkpoint_without_pooler(tmp_path):
    """The SciBERT/BioBERT path: any local BERT-family folder; here one saved without a pooler."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    bert = BertModel(
        BertConfig(**{k: v for k, v in TINY_ENCODER.items() if k != "model_type"}), add_pooling_layer=False
    )
    bert.save_pretrained(tmp_path)
    model = HydraBertModel.from_encoder_pretrained(
        str(tmp_path), tasks={"cite": {"num_labels": 3}}, adapter_size=4
    )
    for key, value in bert.state_dict().items():
        torch.testing.assert_close(model.state_dict()["encoder." + key], value)
    assert model.config.adapter_size == 4
    assert model.config.encoder._name_or_path == str(tmp_path)


# ------------------------------------------------------------- transformers conventions (issue 12)
def test_config_output_flags_are_honoured_like_bert(tiny_tokenizer):
    """config.output_hidden_states / output_attentions switch the outputs on, as on a plain BertModel."""
    batch = _batch(tiny_tokenizer)
    model = HydraBertModel(tiny_config(output_hidden_states=True, output_attentions=True)).eval()
    model.set_attn_implementation("eager")
    out = model(**batch)
    layers = TINY_ENCODER["num_hidden_layers"]
    assert len(out.hidden_states) == layers + 1
    assert len(out.attentions) == layers
    assert out.attentions[0].shape == (
        4,
        TINY_ENCODER["num_attention_heads"],
        *batch["input_ids"].shape[1:] * 2,
    )
    # An explicit argument still wins over the config.
    off = model(**batch, output_hidden_states=False, output_attentions=False)
    assert off.hidden_states is None and off.attentions is None


def test_return_dict_false_gives_a_tuple_from_argument_or_config(tiny_model, tiny_tokenizer):
    batch = _batch(tiny_tokenizer)
    labels = torch.tensor([0, 1, 0, 1])
    as_dict = tiny_model(**batch, task="sentiment", labels=labels)
    as_tuple = tiny_model(**batch, task="sentiment", labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    tiny_model.config.return_dict = False
    from_config = tiny_model(**batch, task="sentiment")
    assert isinstance(from_config, tuple)
    torch.testing.assert_close(from_config[0], as_dict.logits)


def test_get_text_config_is_the_encoder_config(tiny_model):
    assert tiny_model.config.get_text_config() is tiny_model.config.encoder


def test_resized_token_embeddings_survive_save_and_load(tiny_model, tiny_tokenizer, tmp_path):
    vocab_size = TINY_ENCODER["vocab_size"]
    tiny_model.resize_token_embeddings(vocab_size + 5)
    assert tiny_model.config.encoder.vocab_size == vocab_size + 5
    batch = _batch(tiny_tokenizer)
    batch["input_ids"][0, 1] = vocab_size + 4  # one of the new tokens
    tiny_model.save_pretrained(tmp_path)
    loaded = HydraBertModel.from_pretrained(tmp_path).eval()
    assert loaded.get_input_embeddings().weight.shape[0] == vocab_size + 5
    with torch.no_grad():
        for task, logits in tiny_model(**batch).logits.items():
            torch.testing.assert_close(loaded(**batch).logits[task], logits)


def test_from_pretrained_on_a_plain_bert_folder_loads_it_as_from_encoder_pretrained(tiny_encoder_dir):
    """Never a silent default 768-wide encoder: the folder's encoder, as from_encoder_pretrained builds it."""
    tasks = {"cite": {"num_labels": 3}}
    model, info = HydraBertModel.from_pretrained(tiny_encoder_dir, tasks=tasks, output_loading_info=True)
    reference = HydraBertModel.from_encoder_pretrained(tiny_encoder_dir, tasks=tasks)
    assert model.config.encoder.hidden_size == TINY_ENCODER["hidden_size"]
    assert model.config.tasks == reference.config.tasks
    expected = reference.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("heads."):  # heads are new (random) in both
            torch.testing.assert_close(value, expected[name], msg=name)
    assert info["missing_keys"] == {"heads.cite.weight", "heads.cite.bias"}


def test_from_pretrained_on_a_plain_bert_folder_with_mean_pooling_leaves_the_pooler_out(tiny_encoder_dir):
    model, info = HydraBertModel.from_pretrained(
        tiny_encoder_dir,
        tasks={"cite": {"num_labels": 3}},
        pooling="mean",
        embedding_dim=16,
        output_loading_info=True,
    )
    assert model.pooler.dense.weight.shape == (16, TINY_ENCODER["hidden_size"])
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= info["missing_keys"]
    assert info["unexpected_keys"] == {"pooler.dense.weight", "pooler.dense.bias"}


def test_from_pretrained_without_model_type_names_from_encoder_pretrained(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(ValueError, match="from_encoder_pretrained"):
        HydraBertModel.from_pretrained(tmp_path)


def test_encode_shows_its_progress_bar_on_long_inputs_unless_bars_are_off(tiny_model, tiny_tokenizer, capsys):
    """Past 20 batches encode() and predict() draw a bar, except where transformers' bars are switched off
    (what run_mtl.py --disable_tqdm true does)."""
    from transformers.utils import logging as hf_logging

    sentences = ["the good film"] * 21
    tiny_model.encode(sentences, tiny_tokenizer, batch_size=1)
    assert "Batches: 100%" in capsys.readouterr().err
    hf_logging.disable_progress_bar()
    try:
        tiny_model.encode(sentences, tiny_tokenizer, batch_size=1)
        tiny_model.predict(sentences, tiny_tokenizer, batch_size=1)
    finally:
        hf_logging.enable_progress_bar()
    assert "Batches" not in capsys.readouterr().err
