"""The sentence embedding as a product: sentence-similarity tasks (CoSENT on pairs, Spearman/Pearson), a fresh
model that starts at a sentence-transformers checkpoint's own embedding, and the preservation term."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import torch
from conftest import TINY_WORDS, seeded_model, tiny_config, tiny_training_args
from scipy.stats import pearsonr, spearmanr
from test_run_mtl import _config, data_root  # noqa: F401  (the module-scoped tiny data fixture)

import run_mtl
from hydrabert import HydraBertModel
from hydrabert.data import TaskDataConfig, tokenize_task
from hydrabert.data.collation import MultiTaskCollator
from hydrabert.data.loading import load_task_splits
from hydrabert.embedding_preservation import EmbeddingTeacher
from hydrabert.modeling_hydrabert import COSENT_SCALE, _task_loss, pair_similarities
from hydrabert.trainer import MultiTaskTrainer, similarity_correlations

SIMILARITY_TASKS = {**tiny_config().tasks, "sts": {"problem_type": "sentence_similarity"}}


def similarity_model():
    return seeded_model(tasks=SIMILARITY_TASKS)


# ------------------------------------------------------------------------------------ the loss
def test_cosent_loss_equals_a_hand_computation():
    model = similarity_model().eval()
    embeddings = torch.tensor(
        [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.2], [1.0, -1.0], [0.5, 1.0]]
    )  # pairs (0, 3), (1, 4), (2, 5)
    scores = torch.tensor([4.0, 1.0, 2.5])
    cosine = [
        float(torch.nn.functional.cosine_similarity(embeddings[i], embeddings[i + 3], dim=0))
        for i in range(3)
    ]
    # log(1 + sum over (i, j) with score_i > score_j of exp(scale * (cos_j - cos_i)))
    terms = [
        math.exp(COSENT_SCALE * (cosine[j] - cosine[i]))
        for i in range(3)
        for j in range(3)
        if scores[i] > scores[j]
    ]
    expected = math.log(1 + sum(terms))
    similarities = pair_similarities(
        model.config.tasks, torch.nn.functional.pad(embeddings, (0, 30)), task="sts", task_ids=None
    )["sts"]
    assert similarities.tolist() == pytest.approx(cosine * 2, abs=1e-6)
    loss = model.per_example_loss("sts", similarities, scores.repeat(2))
    assert torch.isnan(loss).all()  # no loss of one row: CoSENT ranks the pairs against each other
    value = _task_loss("sts", model.config.tasks["sts"], similarities, scores.repeat(2))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_a_similarity_task_has_no_head_and_predict_skips_it(tiny_tokenizer):
    model = similarity_model().eval()
    assert set(model.heads) == {"sentiment", "topic"}
    assert model.config.tasks["sts"]["num_labels"] == 1
    prediction = model.predict("the good film", tiny_tokenizer)
    assert set(prediction) == {"sentiment", "topic"}
    with pytest.raises(ValueError, match="'sts' is a sentence_similarity task: it has no head"):
        model.predict("the good film", tiny_tokenizer, tasks="sts")
    with pytest.raises(ValueError, match="rows must be pairs"):
        model(**tiny_tokenizer(["the film", "a film", "bad"], padding=True, return_tensors="pt"), task="sts")


# ----------------------------------------------------------------------------- one encoder pass
def _pair_rows(tokenizer, pairs, scores, task_id):
    rows = []
    for (first, second), score in zip(pairs, scores, strict=True):
        a, b = tokenizer(first), tokenizer(second)
        rows.append(
            {**{k: a[k] for k in a}, **{f"pair_{k}": b[k] for k in b}, "labels": score, "task_id": task_id}
        )
    return rows


def test_similarity_pairs_and_classification_rows_share_one_encoder_pass(tiny_tokenizer):
    model = similarity_model().train()
    sts = model.task_names.index("sts")
    sentiment = model.task_names.index("sentiment")
    single = [
        {**tiny_tokenizer(t), "labels": label, "task_id": sentiment} for t, label in (("good", 1), ("bad", 0))
    ]
    pairs = _pair_rows(
        tiny_tokenizer, [("the good film", "a good movie"), ("what", "the awful film")], [4.5, 0.5], sts
    )
    batch = MultiTaskCollator(tiny_tokenizer)([single[0], pairs[0], single[1], pairs[1]])
    # Single rows as they come, then the pairs' first sentences, then their second ones.
    assert batch["task_ids"].tolist() == [sentiment, sentiment, sts, sts, sts, sts]
    assert batch["labels"].tolist() == [1.0, 0.0, 4.5, 0.5, 4.5, 0.5]
    decoded = tiny_tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert decoded[2:] == ["the good film", "what", "a good movie", "the awful film"]

    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    outputs = model(**batch)
    assert len(calls) == 1
    assert set(outputs.task_losses) == {"sentiment", "sts"}
    outputs.loss.backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- the metric
def test_spearman_and_pearson_of_doubled_pairs_match_scipy_on_the_pairs():
    generator = np.random.default_rng(0)
    similarities, scores = generator.normal(size=40), generator.uniform(0, 5, size=40)
    scores[:5] = 2.0  # ties among the gold scores, as STS-B has
    metrics = similarity_correlations(np.tile(similarities, 2), np.tile(scores, 2))
    assert metrics["spearman"] == pytest.approx(spearmanr(similarities, scores).statistic, abs=1e-12)
    assert metrics["pearson"] == pytest.approx(pearsonr(similarities, scores).statistic, abs=1e-12)


# ------------------------------------------------------------------------ data and a training run
STS_ROWS = [
    ("main-captions", "MSRvid", "2012test", "0001", "5.000", 'a good "film', "a good film", "", ""),
    ("main-news", "headlines", "2013", "0002", "0.400", "what is it", "the awful movie"),
    ("main-news", "headlines", "2013", "0003", "3.000", "who was good", "who is good"),
    ("main-forum", "deft-forum", "2014", "0004", "1.5", "the great film", "an awful movie", "x", "y"),
]


def _sts_files(folder, copies=4):
    folder.mkdir(exist_ok=True)
    for split in ("train", "dev", "test"):
        lines = ["\t".join(row) for row in STS_ROWS * copies]
        (folder / f"sts-{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sts_task(data_dir, train=True) -> dict:
    task = {
        "name": "sts",
        "problem_type": "sentence_similarity",
        "data_dir": str(data_dir),
        "validation_file": "sts-dev.csv",
        "test_file": "sts-test.csv",
        "file_format": "tsv",
        "quoting": "none",
        "column_names": ["genre", "source", "year", "id", "score", "s1", "s2", "l1", "l2"],
        "text_column": "s1",
        "text_pair_column": "s2",
        "label_column": "score",
    }
    return {**task, "train_file": "sts-train.csv"} if train else task


def test_sts_files_with_lone_quotes_and_7_or_9_fields_load_as_scored_pairs(tmp_path, tiny_tokenizer):
    _sts_files(tmp_path / "sts", copies=1)
    task = load_task_splits(TaskDataConfig.from_dict(_sts_task(tmp_path / "sts")))
    train = task.splits["train"]
    assert train["text"][0] == 'a good "film' and train["text_pair"][1] == "the awful movie"
    assert train["label"] == pytest.approx([5.0, 0.4, 3.0, 1.5])
    assert task.task_spec()["problem_type"] == "sentence_similarity"
    tokenized = tokenize_task(task.splits, tiny_tokenizer, max_length=16, separate_pairs=True)["train"]
    row = tokenized[0]
    assert tiny_tokenizer.decode(row["pair_input_ids"], skip_special_tokens=True) == "a good film"
    assert row["length"] == max(len(row["input_ids"]), len(row["pair_input_ids"]))


def test_a_similarity_task_needs_its_pair_column_and_its_own_rows():
    spec = {k: v for k, v in _sts_task("somewhere").items() if k != "text_pair_column"}
    with pytest.raises(
        ValueError, match="sentence_similarity task reads sentence pairs: give text_pair_column"
    ):
        TaskDataConfig.from_dict(spec)
    with pytest.raises(ValueError, match="cannot share another task's rows"):
        TaskDataConfig.from_dict({"name": "sts", "problem_type": "sentence_similarity", "source": "other"})


@pytest.mark.parametrize("trained", [True, False], ids=["trained", "evaluation-only"])
def test_run_mtl_reports_spearman_for_a_similarity_task(tmp_path, tiny_encoder_dir, data_root, trained):  # noqa: F811
    from test_run_mtl import TASKS

    _sts_files(tmp_path / "sts")
    tasks = [*TASKS, _sts_task(tmp_path / "sts", train=trained)]
    config = _config(
        tmp_path / "c.json",
        tiny_encoder_dir,
        data_root,
        tmp_path / "out",
        tasks=tasks,
        num_train_epochs=1,
        save_strategy="no",
        embedding_preservation_weight=0.5,
    )
    results = run_mtl.main([config])
    for split in ("eval", "test"):
        assert -1.0 <= results[f"{split}_sts_spearman"] <= 1.0
        assert -1.0 <= results[f"{split}_sts_pearson"] <= 1.0
        assert f"{split}_sts_loss" not in results
        # averages over the tasks that report a metric: the classification tasks' accuracy stays averaged
        assert results[f"{split}_average_accuracy"] == pytest.approx(
            (results[f"{split}_sentiment_accuracy"] + results[f"{split}_question_accuracy"]) / 2
        )
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    logged = {key for entry in state["log_history"] for key in entry}
    assert "loss/embedding_preservation" in logged
    assert ("loss/sts" in logged) == trained
    model = HydraBertModel.from_pretrained(tmp_path / "out")
    assert "sts" in model.config.tasks and "sts" not in model.heads


# ------------------------------------------------------------------------- the fresh embedding
def _sentence_transformers_folder(tiny_encoder_dir, tmp_path, mode="mean"):
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(tiny_encoder_dir, folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    modes = {
        f"pooling_mode_{m}": m == f"{mode}_token{'s' if mode == 'mean' else ''}"
        for m in ("cls_token", "mean_tokens", "max_tokens")
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    return folder


def test_a_sentence_transformers_checkpoint_starts_at_its_own_embedding(
    tiny_encoder_dir, tmp_path, tiny_tokenizer
):
    from sentence_transformers import SentenceTransformer

    folder = _sentence_transformers_folder(tiny_encoder_dir, tmp_path)
    model = HydraBertModel.from_encoder_pretrained(folder, tasks={}).eval()
    assert model.config.pooling == "mean" and model.config.embedding_activation == "tanh"
    assert torch.equal(model.pooler.dense.weight, torch.eye(32))
    sentences = ["the good film", "what was the awful movie", "a"]
    ours = model.encode(sentences, tiny_tokenizer)
    published = SentenceTransformer(str(folder), device="cpu").encode(sentences, convert_to_tensor=True)
    # The checkpoint's pooling, then the identity projection and tanh ...
    batch = tiny_tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.pooler.pool(model.encoder(**batch).last_hidden_state, batch["attention_mask"])
    assert torch.allclose(ours, torch.tanh(pooled), atol=1e-6)
    # ... where `pooled` is the published embedding (which the checkpoint's Normalize only rescales).
    normalize = torch.nn.functional.normalize
    assert torch.allclose(normalize(pooled, dim=-1), normalize(published, dim=-1), atol=1e-5)
    # Said explicitly, the config wins over the checkpoint's pooling; a plain BERT folder keeps cls + pooler.
    assert HydraBertModel.from_encoder_pretrained(folder, tasks={}, pooling="cls").config.pooling == "cls"
    plain = HydraBertModel.from_encoder_pretrained(tiny_encoder_dir, tasks={})
    assert plain.config.pooling == "cls" and not torch.equal(plain.pooler.dense.weight, torch.eye(32))


# --------------------------------------------------------------------------------- preservation
def test_the_preservation_term_is_zero_at_the_start_and_limits_the_drift(tmp_path, tiny_tokenizer):
    model = similarity_model()
    teacher = EmbeddingTeacher(model, weight=2.0)
    batch = tiny_tokenizer(["the good film", "what an awful movie"], padding=True, return_tensors="pt")
    model.eval()
    term, distance = teacher.loss(model(**batch).sentence_embedding, batch)
    assert distance.item() == pytest.approx(0.0, abs=1e-6) and term.item() == pytest.approx(0.0, abs=1e-5)

    texts = [" ".join(TINY_WORDS[(i * 7 + j) % len(TINY_WORDS)] for j in range(2 + i % 5)) for i in range(64)]
    train = tokenize_task(
        datasets.DatasetDict(
            train=datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(64)]})
        ),
        tiny_tokenizer,
        max_length=16,
    )["train"]
    probe = tiny_tokenizer(texts[:16], padding=True, return_tensors="pt")

    def drift(weight: float) -> float:
        model = seeded_model()
        with torch.no_grad():
            before = model.eval()(**probe).sentence_embedding
        args = tiny_training_args(
            tmp_path / f"w{weight}", num_train_epochs=3, embedding_preservation_weight=weight
        )
        MultiTaskTrainer(
            model=model, args=args, train_dataset={"sentiment": train}, processing_class=tiny_tokenizer
        ).train()
        with torch.no_grad():
            after = model.eval()(**probe).sentence_embedding
        return float((1 - torch.nn.functional.cosine_similarity(before, after, dim=-1)).mean())

    free, kept = drift(0.0), drift(50.0)
    assert kept < free / 2, (kept, free)


def test_preservation_weight_must_be_a_nonnegative_number(tmp_path):
    with pytest.raises(ValueError, match="embedding_preservation_weight must be a finite number >= 0"):
        tiny_training_args(tmp_path, embedding_preservation_weight=-1.0)


def test_similarity_pairs_and_preservation_with_a_frozen_encoder_use_the_feature_cache(
    tmp_path, tiny_tokenizer
):
    """freeze_policy='encoder': the encoder runs once per sentence (the cache), the teacher re-projects the cached
    features, and the CoSENT loss still trains the projection."""
    pairs = [("the good film", "a good movie"), ("what", "the awful film"), ("who is it", "where is it")] * 6
    scores = [4.5, 0.5, 2.0] * 6
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(
            {"text": [a for a, _ in pairs], "text_pair": [b for _, b in pairs], "label": scores}
        )
    )
    sts = tokenize_task(splits, tiny_tokenizer, max_length=16, separate_pairs=True)["train"]
    model = seeded_model(tasks={"sts": {"problem_type": "sentence_similarity"}})
    projection = model.pooler.dense.weight.detach().clone()
    args = tiny_training_args(
        tmp_path,
        num_train_epochs=2,
        freeze_policy="encoder",
        embedding_preservation_weight=1.0,
        logging_steps=1,
    )
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset={"sts": sts},
        eval_dataset={"sts": sts},
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    assert trainer.frozen_encoder is not None and trainer.frozen_encoder.hits > 0
    assert not torch.equal(model.pooler.dense.weight, projection)
    logged = [entry for entry in trainer.state.log_history if "loss/embedding_preservation" in entry]
    assert logged and all(math.isfinite(entry["loss/sts"]) for entry in logged)
    metrics = trainer.evaluate()
    assert -1.0 <= metrics["eval_sts_spearman"] <= 1.0


# ------------------------------------------------------------------------------ heads reading [CLS] too
def test_heads_read_the_embedding_beside_tanh_of_the_cls_state(tmp_path, tiny_tokenizer):
    """head_input="embedding+cls": the heads read [tanh(Linear(mean)); tanh(h_CLS)], the sentence embedding is
    unchanged, the cached-features path gives the same outputs, and the setting survives save and load."""
    model = seeded_model(pooling="mean", head_input="embedding+cls", embedding_dim=16).eval()
    hidden = model.config.encoder.hidden_size
    assert model.config.head_input_dim == 16 + hidden
    assert model.heads["sentiment"].in_features == 16 + hidden
    batch = tiny_tokenizer(["the good film", "who is it here"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
        states = model.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        embedding = torch.tanh(model.pooler.dense((states * mask).sum(1) / mask.sum(1)))
        expected = model.heads["sentiment"](torch.cat([embedding, torch.tanh(states[:, 0])], dim=-1))
        cached = model(encoder_features=model.get_encoder_features(**batch))
    torch.testing.assert_close(out.sentence_embedding, embedding)
    torch.testing.assert_close(out.logits["sentiment"], expected)
    for task in out.logits:
        torch.testing.assert_close(cached.logits[task], out.logits[task])

    model.save_pretrained(tmp_path / "saved")
    loaded = HydraBertModel.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.head_input == "embedding+cls"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits["sentiment"], out.logits["sentiment"])


def test_heads_reading_the_cls_state_train_with_the_feature_cache_and_preservation(tmp_path, tiny_tokenizer):
    from conftest import make_task_datasets

    train, evaluation = make_task_datasets(tiny_tokenizer)
    model = seeded_model(pooling="mean", head_input="embedding+cls")
    heads = {name: head.weight.detach().clone() for name, head in model.heads.items()}
    args = tiny_training_args(
        tmp_path, num_train_epochs=1, freeze_policy="encoder", embedding_preservation_weight=1.0
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tiny_tokenizer
    )
    trainer.train()
    assert trainer.frozen_encoder is not None and trainer.frozen_encoder.hits > 0
    assert all(not torch.equal(model.heads[name].weight, before) for name, before in heads.items())
    assert 0.0 <= trainer.evaluate()["eval_sentiment_accuracy"] <= 1.0
