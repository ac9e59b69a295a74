"""Extension points: a task's head and loss are chosen by name from HydraBertModel.HEADS / .LOSSES, which a
subclass extends. A two-layer MLP head with focal loss trains, saves and loads where hydrabert is not installed;
the built-in losses equal their hand computations; unknown names fail at construction naming the task."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import assert_quiet_about_remote_code, seeded_model, tiny_config, tiny_training_args
from torch import nn
from torch.nn import functional as F

from hydrabert import HydraBertModel
from hydrabert.modeling_hydrabert import (
    FOCAL_GAMMA,
    LABEL_SMOOTHING,
    TaskLoss,
    focal_loss,
    label_smoothing_loss,
)
from hydrabert.trainer import MultiTaskTrainer

EXTENDED_TASKS = {
    "sentiment": {"labels": ["negative", "positive"], "head": "mlp", "loss": "focal"},
    "topic": {"num_labels": 3, "loss": "label_smoothing"},
}

LOAD_WITHOUT_HYDRABERT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hydrabert"] = None  # a machine that never installed hydrabert
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    ids = torch.tensor(json.loads(sys.argv[2]))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    print("RESULT" + json.dumps({name: value.tolist() for name, value in logits.items()}))
    print("HEAD" + type(model.heads["sentiment"]).__name__)
    """
)


def test_an_mlp_head_with_focal_loss_trains_saves_and_loads_without_hydrabert(
    tmp_path, task_data, tiny_tokenizer
):
    model = seeded_model(tasks=EXTENDED_TASKS)
    assert isinstance(model.heads["sentiment"], nn.Sequential) and isinstance(model.heads["topic"], nn.Linear)
    before = {name: p.detach().clone() for name, p in model.heads.named_parameters()}
    args = tiny_training_args(tmp_path / "run", max_steps=6, layerwise_lr_decay=0.8)
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.train()
    for name, param in model.heads.named_parameters():  # both MLP layers and the linear head trained
        assert not torch.equal(param, before[name]), name
    groups = {group.get("name") for group in trainer.optimizer.param_groups}
    assert any(name and name.startswith("heads") for name in groups), (
        groups
    )  # LLRD puts the MLP with the heads

    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["tasks"]
    assert saved["sentiment"]["head"] == "mlp" and saved["sentiment"]["loss"] == "focal"
    ids = [[2, 5, 12, 10, 3], [2, 6, 13, 3, 0]]
    model.eval()
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor(ids), attention_mask=torch.ones(2, 5, dtype=torch.long)
        ).logits
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_HYDRABERT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "saved"), json.dumps(ids)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet_about_remote_code(result)
    loaded = json.loads(result.stdout.split("RESULT", 1)[1].splitlines()[0])
    assert "HEADSequential" in result.stdout
    for name, value in expected.items():
        torch.testing.assert_close(torch.tensor(loaded[name]), value, atol=1e-5, rtol=0)


def test_focal_and_label_smoothing_equal_their_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 2, -100])
    probabilities = logits.softmax(-1)
    rows = []
    for row in range(2):
        p_true = probabilities[row, labels[row]]
        rows.append(-((1 - p_true) ** FOCAL_GAMMA) * torch.log(p_true))
    assert focal_loss(logits, labels, {}).item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-6)
    per_row = focal_loss(logits, labels, {}, reduction="none")
    assert torch.isnan(per_row[2]) and per_row[0].item() == pytest.approx(rows[0].item(), rel=1e-6)

    smoothed = []
    for row in range(2):  # (1 - eps) * NLL of the label + eps * mean NLL over the labels
        log_p = probabilities[row].log()
        smoothed.append(-(1 - LABEL_SMOOTHING) * log_p[labels[row]] - LABEL_SMOOTHING * log_p.mean())
    got = label_smoothing_loss(logits, labels, {})
    assert got.item() == pytest.approx(torch.stack(smoothed).mean().item(), rel=1e-6)
    # gamma 0 would be plain cross-entropy: the focal weight is what differs
    assert focal_loss(logits, labels, {}).item() < F.cross_entropy(logits, labels, ignore_index=-100).item()


def test_the_models_loss_is_the_named_one(tiny_tokenizer):
    model = seeded_model(tasks=EXTENDED_TASKS).eval()
    batch = tiny_tokenizer(["good film", "bad movie", "what is it"], padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1])
    out = model(**batch, task="sentiment", labels=labels)
    assert out.loss.item() == pytest.approx(focal_loss(out.logits, labels, {}).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            {"labels": ["a", "b"], "head": "transformer"},
            r"Task 'x': unknown head 'transformer'; known heads: \['linear', 'mlp'\]",
        ),
        (
            {"labels": ["a", "b"], "loss": "hinge"},
            r"Task 'x': unknown loss 'hinge'; known losses: \['focal', 'label_smoothing'\]",
        ),
        (
            {"labels": ["a", "b"], "problem_type": "multi_label_classification", "loss": "focal"},
            r"Task 'x': loss 'focal' serves \['single_label_classification'\], not multi_label_classification",
        ),
        (
            {"labels": ["a", "b"], "loss": "focal", "class_weights": [1.0, 2.0]},
            r"class_weights scale the default cross-entropy; with loss='focal' drop them",
        ),
        (
            {"problem_type": "sentence_similarity", "head": "mlp"},
            r"a sentence_similarity task has no head, so no head='mlp'",
        ),
    ],
    ids=["head", "loss", "loss-for-problem-type", "loss-and-class-weights", "similarity-head"],
)
def test_unknown_or_misplaced_names_fail_at_construction(task, message):
    with pytest.raises(ValueError, match=message):
        HydraBertModel(tiny_config(tasks={"x": task}))
    model = seeded_model()
    with pytest.raises(
        ValueError, match=message.replace("Task 'x'", "Task 'y'").replace("tasks\\['x'\\]", "tasks['y']")
    ):
        model.add_task("y", **{k: v for k, v in task.items()})


def test_a_subclass_adds_its_own_head_and_loss(tiny_tokenizer):
    def bilinear_head(config, spec):
        return nn.Bilinear(config.embedding_dim, config.embedding_dim, spec["num_labels"])

    def squared_hinge(logits, labels, spec, reduction="mean"):
        margins = F.relu(1 - logits.gather(1, labels[:, None]) + logits).pow(2).sum(-1) - 1
        return margins.mean() if reduction == "mean" else margins

    class Wrapped(nn.Module):  # a head whose forward takes the embedding once
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, embedding):
            return self.inner(embedding, embedding)

    class MyModel(HydraBertModel):
        HEADS = {
            **HydraBertModel.HEADS,
            "bilinear": lambda config, spec: Wrapped(bilinear_head(config, spec)),
        }
        LOSSES = {
            **HydraBertModel.LOSSES,
            "squared_hinge": TaskLoss(squared_hinge, ("single_label_classification",)),
        }

    tasks = {"sentiment": {"labels": ["negative", "positive"], "head": "bilinear", "loss": "squared_hinge"}}
    model = MyModel(tiny_config(tasks=tasks))
    assert isinstance(model.heads["sentiment"], Wrapped)
    batch = tiny_tokenizer(["good film", "bad movie"], padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0])
    out = model(**batch, task="sentiment", labels=labels)
    assert out.loss.item() == pytest.approx(squared_hinge(out.logits, labels, {}).item(), rel=1e-6)
    out.loss.backward()
    assert model.heads["sentiment"].inner.weight.grad is not None
    with pytest.raises(ValueError, match="unknown head 'bilinear'"):
        HydraBertModel(tiny_config(tasks=tasks))  # the base class does not know it
