"""Telling a Hub repo id of a trained hydrabert model from a plain encoder's (issue 26), through the offline
Hub test server: at the pinned revision, offline from the cache, and with errors that name the repo. The
run_mtl.py side (continue from a repo id at a pinned revision, add a task) is in tests/test_run_mtl.py."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel

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
