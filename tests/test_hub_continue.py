"""Continuing a trained hydrabert model from a Hub repo id (issue 26), through the offline Hub test server:
the repo id is told apart from a plain encoder's at the pinned revision, and run_mtl.py keeps its heads and
labels, starts from that revision's weights and adds the tasks the checkpoint lacks."""

from __future__ import annotations

import json
import os

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load, load_file, save_file
from test_run_mtl import PUSH_SETTINGS, TASKS, _config, data_root  # noqa: F401 (data_root: a fixture)
from transformers import BertModel

import run_mtl
from hydrabert.assembly import is_hydrabert_checkpoint, load_model

SPEC = {
    "labels": ["neg", "pos"],
    "num_labels": 2,
    "problem_type": "single_label_classification",
    "weight": 1.0,
}


def test_a_hub_repo_id_is_told_apart_from_an_encoder_at_its_revision(hub_server, tiny_encoder_dir):
    encoder_commit = BertModel.from_pretrained(tiny_encoder_dir).push_to_hub("test-user/grows")
    trained = load_model(tiny_encoder_dir, {"sentiment": SPEC})
    trained_commit = trained.push_to_hub("test-user/grows")  # the same repo, now a trained hydrabert model

    assert is_hydrabert_checkpoint("test-user/grows")
    assert is_hydrabert_checkpoint("test-user/grows", revision=trained_commit.oid)
    assert not is_hydrabert_checkpoint("test-user/grows", revision=encoder_commit.oid)
    # The pin decides which path a run takes: a new model on the encoder, or the trained one with its head.
    fresh = load_model("test-user/grows", {"intent": SPEC}, revision=encoder_commit.oid)
    assert list(fresh.config.tasks) == ["intent"]
    continued = load_model("test-user/grows", {"intent": SPEC}, revision=trained_commit.oid)
    assert sorted(continued.config.tasks) == ["intent", "sentiment"]
    torch.testing.assert_close(continued.heads["sentiment"].weight, trained.heads["sentiment"].weight)

    # Offline, the cached revision still reads; a repo never downloaded is an error that names it.
    hub_server.set_offline(True)
    requests = len(hub_server.hub.requests)
    assert is_hydrabert_checkpoint("test-user/grows", revision=trained_commit.oid)
    assert not is_hydrabert_checkpoint("test-user/grows", revision=encoder_commit.oid)
    assert len(hub_server.hub.requests) == requests
    with pytest.raises(OSError, match=r"config\.json of test-user/never-fetched at revision 'main'"):
        load_model("test-user/never-fetched", {"intent": SPEC})
    hub_server.set_offline(False)
    with pytest.raises(OSError, match=r"test-user/grows at revision 'no-such-branch'"):
        is_hydrabert_checkpoint("test-user/grows", revision="no-such-branch")


def test_run_mtl_continues_a_hub_model_at_a_pinned_revision_with_its_heads(
    tmp_path,
    tiny_encoder_dir,
    data_root,  # noqa: F811 (the fixture imported from test_run_mtl)
    hub_server,
    monkeypatch,
):
    # A model trained on one task, pushed by run_mtl.py itself (its push, then the card-pinning commit).
    first = tmp_path / "first"
    run_mtl.main(
        [
            _config(
                tmp_path / "first.json", tiny_encoder_dir, data_root, first, tasks=TASKS[:1], **PUSH_SETTINGS
            )
        ]
    )
    repo_id = PUSH_SETTINGS["hub_model_id"]
    pinned = list(hub_server.hub.get_repo(repo_id).commits.values())[1].oid
    # Read from the server's store, not through the client: the run must download the pinned files itself.
    pinned_weights = load(hub_server.hub.file_bytes(repo_id, "model.safetensors", revision=pinned))

    # A later commit with other weights: a run that ignored the pin would start from these.
    later_weights = {key: value + 1.0 for key, value in pinned_weights.items()}
    save_file(later_weights, tmp_path / "later.safetensors", metadata={"format": "pt"})
    later = HfApi().upload_file(
        path_or_fileobj=tmp_path / "later.safetensors", path_in_repo="model.safetensors", repo_id=repo_id
    )
    assert later.oid != pinned

    started = {}

    def build_and_record(model_args, task_specs):
        model = build_model(model_args, task_specs)
        started["state"] = {key: value.detach().clone() for key, value in model.state_dict().items()}
        started["tasks"] = json.loads(json.dumps(model.config.tasks))
        return model

    build_model = run_mtl.build_model
    monkeypatch.setattr(run_mtl, "build_model", build_and_record)
    requests = len(hub_server.hub.requests)
    out = tmp_path / "continued"
    config = _config(
        tmp_path / "continued.json", repo_id, data_root, out, num_train_epochs=1, save_strategy="no"
    )
    results = run_mtl.main([config, "--model_revision", pinned])

    # Started from the pinned revision: its weights, its head and labels, and a new head for the new task.
    assert started["tasks"]["sentiment"]["labels"] == ["neg", "pos"]
    assert started["tasks"]["question"]["labels"] == ["DESC", "HUM", "LOC"]
    for key, value in pinned_weights.items():
        torch.testing.assert_close(started["state"][key], value, msg=key)
    assert "heads.question.weight" in started["state"]
    assert not any(key.startswith("heads.question") for key in pinned_weights)
    downloads = {path for method, path in hub_server.hub.requests[requests:] if method == "GET"}
    assert f"/{repo_id}/resolve/{pinned}/model.safetensors" in downloads
    assert f"/{repo_id}/resolve/{pinned}/tokenizer.json" in downloads  # the tokenizer at the pin too
    assert not any(later.oid in path for path in downloads)

    # ... and trained both heads from there.
    assert (
        0.0 <= results["eval_sentiment_accuracy"] <= 1.0 and 0.0 <= results["eval_question_accuracy"] <= 1.0
    )
    saved = json.loads((out / "config.json").read_text())["tasks"]
    assert saved["sentiment"]["labels"] == ["neg", "pos"] and saved["question"]["labels"] == [
        "DESC",
        "HUM",
        "LOC",
    ]
    trained = load_file(os.path.join(out, "model.safetensors"))
    assert not torch.equal(trained["heads.sentiment.weight"], pinned_weights["heads.sentiment.weight"])
