"""Deploy without remote code: each task as a standard classifier, the encoder as a sentence-transformers
model, the whole model as ONNX; checked in a fresh process that cannot import hydrabert and never passes
trust_remote_code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TINY_ENCODER, seeded_model
from test_run_mtl import PUSH_SETTINGS, _config, data_root  # noqa: F401  (data_root: the tiny task files, a fixture)
from transformers import AutoModel, AutoTokenizer

import run_mtl
from hydrabert import HydraBertModel
from hydrabert.export import (
    ExportError,
    OnnxPredictor,
    export_onnx,
    export_sentence_transformer,
    export_task,
)
from hydrabert.export.__main__ import main as export_cli
from hydrabert.export.deploy import plan_exports

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("sentence_transformers")

SENTENCES = ["good film", "what is the answer", "the movie was a great film", "bad", "who was the awful film"]


def _decisive(model):
    """Random heads give near-uniform probabilities; scaled up, labels cannot flip on rounding noise."""
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.mul_(50.0)
    return model.eval()


@pytest.fixture
def model():
    return _decisive(seeded_model())


def _same_predictions(got, expected, abs_tol=1e-5):
    assert len(got) == len(expected)
    for row, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert set(g) == set(e), row
        for task in e:
            assert g[task]["label"] == e[task]["label"], (row, task)
            assert g[task]["score"] == pytest.approx(e[task]["score"], abs=abs_tol), (row, task)


# The fresh process: any import of hydrabert fails, and no call passes trust_remote_code.
NO_HYDRABERT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hydrabert"] = None
    import numpy as np, onnxruntime, torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    folder = sys.argv[1]
    expected = torch.load(folder + "/expected.pt")
    sentences = expected["sentences"]
    report = {}
    for task, logits in expected["logits"].items():
        path = f"{folder}/{task}"
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        assert type(model).__module__.startswith("transformers.models."), type(model).__module__
        batch = AutoTokenizer.from_pretrained(path)(sentences, padding=True, return_tensors="pt")
        with torch.no_grad():
            report[task + ":logits"] = (model(**batch).logits - logits).abs().max().item()
        report[task + ":pipeline"] = pipeline("text-classification", model=path)(sentences)
    encoder = SentenceTransformer(folder + "/sentence-transformer")
    got = encoder.encode(sentences, convert_to_tensor=True)
    report["st"] = (got - expected["embedding"]).abs().max().item()
    session = onnxruntime.InferenceSession(folder + "/onnx/model.onnx")
    names = [i.name for i in session.get_inputs()]
    onnx_batch = AutoTokenizer.from_pretrained(folder + "/onnx")(sentences, padding=True, return_tensors="np")
    outputs = session.run(None, {n: onnx_batch[n].astype(np.int64) for n in names})
    output_names = [o.name for o in session.get_outputs()]
    reference = [*expected["logits"].values(), expected["embedding"]]
    report["onnx"] = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outputs, reference))
    report["onnx_names"] = names + output_names
    report["loaded"] = sorted(
        name for name, module in sys.modules.items()
        if module is not None and name.split(".")[0] in ("hydrabert", "transformers_modules")
    )
    print("REPORT" + json.dumps(report))
    """
)


def test_every_export_runs_without_hydrabert_or_remote_code(model, tiny_tokenizer, tmp_path):
    for task in model.task_names:
        export_task(model, task, tmp_path / task, tokenizer=tiny_tokenizer)
    export_sentence_transformer(model, tmp_path / "sentence-transformer", tokenizer=tiny_tokenizer)
    result = export_onnx(model, tmp_path / "onnx", tokenizer=tiny_tokenizer)
    assert result.max_abs_diff <= 1e-4

    batch = tiny_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    torch.save(
        {"sentences": SENTENCES, "logits": out.logits, "embedding": model.encode(SENTENCES, tiny_tokenizer)},
        tmp_path / "expected.pt",
    )
    script = tmp_path / "load.py"
    script.write_text(NO_HYDRABERT)
    assert "trust_remote_code" not in NO_HYDRABERT
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1])

    assert report["loaded"] == []
    predictions = model.predict(SENTENCES, tiny_tokenizer)
    for task in model.task_names:
        assert report[f"{task}:logits"] <= 1e-5
        pipelined = [{task: row} for row in report[f"{task}:pipeline"]]
        _same_predictions(pipelined, [{task: row[task]} for row in predictions])
    assert report["st"] <= 1e-5
    assert report["onnx"] <= 1e-4
    assert report["onnx_names"] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "logits_sentiment",
        "logits_topic",
        "sentence_embedding",
    ]


def test_exported_task_carries_labels_problem_type_and_card(model, tiny_tokenizer, tmp_path):
    model.add_task("tags", labels=["a", "b", "c"], problem_type="multi_label_classification")
    model.add_task("score", problem_type="regression")
    for task in ("tags", "score"):
        export_task(
            model, task, tmp_path / task, tokenizer=tiny_tokenizer, source="me/hydra", model_id=f"me/{task}"
        )
    tags = json.loads((tmp_path / "tags" / "config.json").read_text())
    assert tags["id2label"] == {"0": "a", "1": "b", "2": "c"} and tags["label2id"] == {"a": 0, "b": 1, "c": 2}
    assert tags["problem_type"] == "multi_label_classification"
    assert tags["architectures"] == ["BertForSequenceClassification"] and "auto_map" not in tags
    assert json.loads((tmp_path / "score" / "config.json").read_text())["problem_type"] == "regression"
    card = (tmp_path / "tags" / "README.md").read_text()
    assert "base_model: me/hydra" in card and "pipeline_tag: text-classification" in card
    assert "`tags`" in card and 'model="me/tags"' in card and "\n\n\n" not in card


def test_onnx_predictor_gives_predict_and_encode(model, tiny_tokenizer, tmp_path):
    result = model.export_onnx(tmp_path / "onnx", tokenizer=tiny_tokenizer, quantize=True)
    assert result.quantized_path.endswith("model_quantized.onnx") and os.path.isfile(result.quantized_path)
    predictor = OnnxPredictor(tmp_path / "onnx")
    _same_predictions(predictor.predict(SENTENCES, batch_size=2), model.predict(SENTENCES, tiny_tokenizer))
    _same_predictions(
        [predictor.predict("good film", tasks="topic")],
        [model.predict("good film", tiny_tokenizer, tasks="topic")],
    )
    torch.testing.assert_close(
        torch.from_numpy(predictor.encode(SENTENCES, normalize=True)),
        model.encode(SENTENCES, tiny_tokenizer, normalize=True),
        atol=1e-5,
        rtol=0,
    )
    quantized = OnnxPredictor(tmp_path / "onnx", file_name="model_quantized.onnx").predict(SENTENCES)
    assert [set(row) for row in quantized] == [{"sentiment", "topic"}] * len(SENTENCES)
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        predictor.predict(SENTENCES, tasks="nope")


def test_onnx_graph_is_fused_by_onnxruntime(model, tiny_tokenizer, tmp_path):
    """The default model.onnx is ONNX Runtime's fused graph: a torch/transformers/onnxruntime upgrade that
    breaks the pattern fails here, not silently in production. The residual layer norms stay Add +
    LayerNormalization (ONNX Runtime's CPU SkipLayerNormalization is slower, docs/deploy.md); Attention does
    not fuse from the dynamo export; when it starts to, this test says so and the docs should be updated."""
    import onnx

    layers = model.config.encoder.num_hidden_layers
    result = export_onnx(model, tmp_path / "fused", tokenizer=tiny_tokenizer, quantize=True)
    expected = {
        "Attention": 0,
        "SkipLayerNormalization": 0,
        "LayerNormalization": 2 * layers + 1,  # two per layer and the embeddings'
        "BiasGelu": layers,
        "EmbedLayerNormalization": 0,
    }
    assert result.fused_nodes == expected
    saved = onnx.load(result.path)
    written = [node.op_type for node in saved.graph.node]
    assert {op: written.count(op) for op in expected} == expected  # what was counted is what was saved
    assert "hydrabert_tasks" in {prop.key for prop in saved.metadata_props}  # fusion keeps the metadata
    assert result.max_abs_diff <= 1e-4
    # The int8 copy is quantized from the fused graph (its fused Gelu survives).
    quantized = [node.op_type for node in onnx.load(result.quantized_path).graph.node]
    assert quantized.count("BiasGelu") == layers and "DynamicQuantizeLinear" in quantized

    plain = export_onnx(model, tmp_path / "plain", tokenizer=tiny_tokenizer, fuse=False)
    assert plain.fused_nodes == {}
    assert "BiasGelu" not in [node.op_type for node in onnx.load(plain.path).graph.node]


def test_cpu_sessions_keep_the_residual_layer_norms_unfused(model, tiny_tokenizer, tmp_path):
    """ONNX Runtime's session optimizer would fuse Add + LayerNormalization into SkipLayerNormalization at load
    time; OnnxPredictor's CPU session is told not to, and still gives predict()'s results."""
    import onnx
    import onnxruntime

    from hydrabert.export.onnx_layout import session_kwargs

    assert session_kwargs(["CPUExecutionProvider"]) == {"disabled_optimizers": ["SkipLayerNormFusion"]}
    assert session_kwargs([("CPUExecutionProvider", {})]) == {"disabled_optimizers": ["SkipLayerNormFusion"]}
    assert session_kwargs(["CUDAExecutionProvider", "CPUExecutionProvider"]) == {}

    folder = tmp_path / "onnx"
    export_onnx(model, folder, tokenizer=tiny_tokenizer)
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "as_loaded.onnx")  # the graph the session runs
    predictor = OnnxPredictor(folder, session_options=options, threads=1)
    ran = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    assert "SkipLayerNormalization" not in ran and "LayerNormalization" in ran
    # Without the argument ONNX Runtime fuses them: the check above can fail.
    plain = onnxruntime.SessionOptions()
    plain.optimized_model_filepath = str(tmp_path / "default.onnx")
    onnxruntime.InferenceSession(str(folder / "model.onnx"), plain, providers=["CPUExecutionProvider"])
    assert "SkipLayerNormalization" in [
        node.op_type for node in onnx.load(plain.optimized_model_filepath).graph.node
    ]
    _same_predictions(predictor.predict(SENTENCES), model.predict(SENTENCES, tiny_tokenizer))


def test_onnx_validation_raises_on_a_different_label(model, tiny_tokenizer, tmp_path, monkeypatch):
    from hydrabert.export import onnx_graph

    monkeypatch.setattr(onnx_graph, "_compare", lambda *args: (1e-6, {"sentiment": 1, "topic": 0}))
    with pytest.raises(
        RuntimeError, match=r"labels differing per task \{'sentiment': 1.*validation sentences"
    ):
        export_onnx(model, tmp_path, tokenizer=tiny_tokenizer)


def test_write_exports_checks_onnx_on_real_sentences(model, tiny_tokenizer, tmp_path, monkeypatch):
    """deploy's ONNX export is validated on sentences through the model's tokenizer, not random ids, and the
    tokenizer stays one folder up (the model's), not copied into onnx/."""
    from hydrabert.export import deploy, onnx_graph

    seen = []
    compare = onnx_graph._compare

    def recording(model, path, batch):
        seen.append(batch["input_ids"])
        return compare(model, path, batch)

    monkeypatch.setattr(onnx_graph, "_compare", recording)
    deploy.write_exports(model, tiny_tokenizer, str(tmp_path / "model"), ["onnx"])
    expected = tiny_tokenizer(
        onnx_graph.VALIDATION_SENTENCES,
        padding=True,
        truncation=True,
        padding_side="right",
        return_tensors="pt",
    )["input_ids"]
    assert len(seen) == 1 and torch.equal(seen[0], expected)
    assert not os.path.exists(tmp_path / "model" / "onnx" / "tokenizer_config.json")


@pytest.mark.parametrize(
    "overrides",
    [
        {"pooling": "mean"},
        {"adapter_size": 8},
        {"embedding_dim": 16, "embedding_activation": "identity"},
        {"pooling": "mean", "head_input": "embedding+cls", "embedding_dim": 16},
    ],
    ids=["mean", "adapter", "narrow-identity", "embedding-and-cls"],
)
def test_onnx_exports_any_config_exactly(overrides, tiny_tokenizer, tmp_path):
    model = _decisive(seeded_model(**overrides))
    if model.adapter is not None:  # a trained adapter, not the identity it starts as
        torch.nn.init.normal_(model.adapter.up.weight, std=0.5)
    result = export_onnx(model, tmp_path, tokenizer=tiny_tokenizer)
    assert result.max_abs_diff <= 1e-4
    _same_predictions(OnnxPredictor(tmp_path).predict(SENTENCES), model.predict(SENTENCES, tiny_tokenizer))


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"pooling": "mean"}, "pooling='mean'"),
        ({"adapter_size": 8}, "adapter_size=8"),
        ({"embedding_dim": 16}, "embedding_dim=16 != hidden_size=32"),
        ({"embedding_activation": "identity"}, "embedding_activation='identity'"),
        ({"head_input": "embedding+cls"}, "head_input='embedding+cls'"),
    ],
)
def test_task_export_refuses_configs_a_standard_classifier_cannot_express(
    overrides, named, tiny_tokenizer, tmp_path
):
    model = seeded_model(**overrides)
    with pytest.raises(ExportError, match="export_onnx exports every task") as raised:
        model.export_task("sentiment", tmp_path / "out", tokenizer=tiny_tokenizer)
    assert named in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_sentence_transformer_export_refuses_the_adapter(tiny_tokenizer, tmp_path):
    with pytest.raises(ExportError, match="adapter_size=8.*export_onnx"):
        seeded_model(adapter_size=8).export_sentence_transformer(tmp_path, tokenizer=tiny_tokenizer)


@pytest.mark.parametrize(
    "overrides, normalize",
    [({"pooling": "mean"}, False), ({"embedding_dim": 16, "embedding_activation": "identity"}, True)],
    ids=["mean", "narrow-identity-normalized"],
)
def test_sentence_transformer_export_covers_mean_pooling_and_other_widths(
    overrides, normalize, tiny_tokenizer, tmp_path
):
    from sentence_transformers import SentenceTransformer

    model = seeded_model(**overrides).eval()
    export_sentence_transformer(model, tmp_path, tokenizer=tiny_tokenizer, normalize=normalize)
    got = SentenceTransformer(str(tmp_path)).encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(
        got, model.encode(SENTENCES, tiny_tokenizer, normalize=normalize), atol=1e-5, rtol=0
    )
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules][-1] == ("Normalize" if normalize else "Dense")
    assert "sentence-transformers" in (tmp_path / "README.md").read_text()
    # A complete BERT checkpoint: nothing "newly initialized" at each load; the unread pooler is zeros.
    encoder, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not encoder.pooler.dense.weight.any() and not encoder.pooler.dense.bias.any()


def _family_model(encoder):
    from hydrabert import HydraBertConfig, HydraBertModel

    torch.manual_seed(0)
    return _decisive(HydraBertModel(HydraBertConfig(encoder=encoder, tasks={"sentiment": {"num_labels": 2}})))


def test_roberta_family_exports_through_its_classification_head(tmp_path):
    from transformers import AutoModelForSequenceClassification

    encoder = {**TINY_ENCODER, "model_type": "roberta", "max_position_embeddings": 66, "type_vocab_size": 1}
    model = _family_model(encoder)
    export_task(model, "sentiment", tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "RobertaForSequenceClassification"
    input_ids = torch.tensor([[0, 7, 8, 9, 2], [0, 11, 2, 1, 1]])
    attention_mask = (input_ids != 1).long()
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, task="sentiment").logits
        torch.testing.assert_close(
            loaded(input_ids=input_ids, attention_mask=attention_mask).logits, expected
        )


@pytest.mark.parametrize(
    "encoder, why",
    [
        # ELECTRA's head has BERT's shapes but GELU: caught by comparing logits.
        ({**TINY_ENCODER, "model_type": "electra", "embedding_size": 32}, "computes task 'sentiment'"),
        # DistilBERT: pre_classifier + ReLU, no pooler.
        (
            {
                "model_type": "distilbert",
                "vocab_size": 99,
                "dim": 32,
                "n_layers": 2,
                "n_heads": 4,
                "hidden_dim": 37,
            },
            "neither a pooler",
        ),
    ],
    ids=["electra", "distilbert"],
)
def test_task_export_refuses_families_without_that_classifier(encoder, why, tmp_path):
    model = _family_model(encoder)
    with pytest.raises(ExportError, match=why):
        export_task(model, "sentiment", tmp_path)
    with pytest.raises(ExportError, match=why):
        plan_exports(model, "task")  # run_mtl.py asks before training
    assert plan_exports(model, "all") == ["sentence_transformer", "onnx"]


def test_plan_rejects_unknown_kinds(model):
    with pytest.raises(ValueError, match="subset of"):
        plan_exports(model, "task,gguf")
    assert plan_exports(model, "onnx, task") == ["onnx", "task"]


def test_cli_exports_a_saved_model(model, tiny_tokenizer, tmp_path):
    saved = tmp_path / "model"
    model.save_pretrained(saved)
    tiny_tokenizer.save_pretrained(saved)
    export_cli(["task", str(saved), str(tmp_path / "sentiment"), "--task", "sentiment"])
    assert json.loads((tmp_path / "sentiment" / "config.json").read_text())["id2label"] == {
        "0": "negative",
        "1": "positive",
    }
    written = export_cli(["all", str(saved)])
    assert set(written) == {"onnx", "sentence_transformer", "task:sentiment", "task:topic"}
    assert os.path.isfile(saved / "onnx" / "model_quantized.onnx")
    assert os.path.isfile(tmp_path / "model-topic" / "model.safetensors")
    assert os.path.isfile(tmp_path / "model-sentence-transformer" / "modules.json")
    # The graph in model/onnx/ finds the model's tokenizer one folder up.
    _same_predictions(OnnxPredictor(saved).predict(SENTENCES), model.predict(SENTENCES, tiny_tokenizer))
    with pytest.raises(SystemExit):
        export_cli(["all", "not/a/folder"])


def _export_command(*args):
    """`python -m hydrabert.export ARGS` in its own process, as a user runs it (its own logging set-up)."""
    command = [sys.executable, "-m", "hydrabert.export", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_cli_prints_hydrabert_s_progress_not_other_libraries_noise(model, tiny_tokenizer, tmp_path):
    """onnxscript and onnxruntime's quantizer log a line per pass or node at INFO, torch.onnx a line per
    torchvision operator: the command line shows hydrabert's own lines and the warnings that matter."""
    saved = tmp_path / "model"
    model.save_pretrained(saved)
    tiny_tokenizer.save_pretrained(saved)
    result = _export_command("onnx", saved, tmp_path / "onnx", "--quantize")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "INFO - hydrabert.export.onnx_graph - ONNX graph" in result.stderr
    lines = result.stderr.splitlines()
    noise = [
        line for line in lines if line.startswith("INFO - ") and not line.startswith("INFO - hydrabert.")
    ]
    assert noise == [], noise[:5]
    assert not [line for line in lines if "torchvision" in line or "LeafSpec" in line], result.stderr[-2000:]
    assert json.loads(result.stdout)["onnx_max_abs_diff"] < 1e-4
    # The sentence-transformer export loads the encoder it wrote: no load report of "newly initialized" weights,
    # also where the family's pooler is not hydrabert's embedding (mean pooling).
    mean = tmp_path / "mean"
    seeded_model(pooling="mean").save_pretrained(mean)
    tiny_tokenizer.save_pretrained(mean)
    sentence = _export_command("sentence-transformer", mean, tmp_path / "st")
    assert sentence.returncode == 0, sentence.stderr[-3000:]
    assert "MISSING" not in sentence.stderr and "newly initialized" not in sentence.stderr, sentence.stderr


def test_remote_code_model_explains_the_export_extra(model, tiny_tokenizer, tmp_path):
    """The travelling file imports hydrabert.export only when asked, and says what to install."""
    model.save_pretrained(tmp_path / "model")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hydrabert"] = None
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        try:
            model.export_onnx("out")
        except ImportError as err:
            print("MESSAGE", err)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pip install 'hydrabert[export]'" in done.stdout


# ------------------------------------------------------------------------------- run_mtl.py --export
LOAD_EXPORTS_FROM_HUB = textwrap.dedent(
    """
    import json, sys
    sys.modules["hydrabert"] = None  # a machine that never installed hydrabert, and no remote code
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline
    repo, sentences = sys.argv[1], json.loads(sys.argv[2])
    print("RESULT" + json.dumps({
        "sentiment": pipeline("text-classification", model=repo + "-sentiment")(sentences),
        "embedding": SentenceTransformer(repo + "-sentence-transformer").encode(sentences).tolist(),
    }))
    """
)


def test_run_mtl_exports_next_to_the_model_and_pushes_one_repo_per_standard_model(
    tmp_path,
    tiny_encoder_dir,
    data_root,  # noqa: F811  (the fixture imported above)
    hub_server,
):
    out = tmp_path / "out"
    config = _config(
        tmp_path / "c.json",
        tiny_encoder_dir,
        data_root,
        out,
        **PUSH_SETTINGS,
        do_predict=False,
        export="all",
    )
    run_mtl.main([config])

    # Locally: ONNX inside the model folder, each standard model beside it.
    for path in ("out/onnx/model.onnx", "out/onnx/model_quantized.onnx", "out-sentiment/model.safetensors"):
        assert (tmp_path / path).is_file(), path
    assert (tmp_path / "out-question" / "README.md").is_file()
    assert (tmp_path / "out-sentence-transformer" / "modules.json").is_file()

    # On the Hub: onnx/ in the model's own push commit; one repo per standard model, cards naming the source.
    pushed = list(hub_server.hub.get_repo("test-user/tiny-mtl").commits.values())[1]
    assert {"onnx/model.onnx", "onnx/model_quantized.onnx", "model.safetensors"} <= set(pushed.files)
    for repo_id, files in (
        ("test-user/tiny-mtl-sentiment", {"config.json", "model.safetensors", "tokenizer.json", "README.md"}),
        ("test-user/tiny-mtl-question", {"config.json", "model.safetensors", "README.md"}),
        ("test-user/tiny-mtl-sentence-transformer", {"modules.json", "2_Dense/config.json", "README.md"}),
    ):
        head = list(hub_server.hub.get_repo(repo_id).commits.values())[-1]
        assert files <= set(head.files), (repo_id, sorted(head.files))
        assert "test-user/tiny-mtl" in head.files["README.md"].decode()

    local = HydraBertModel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    sentences = ["who was the good film", "how bad a movie", "where is the great film"]
    done = subprocess.run(
        [sys.executable, "-c", LOAD_EXPORTS_FROM_HUB, "test-user/tiny-mtl", json.dumps(sentences)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**hub_server.subprocess_env(), "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.split("RESULT", 1)[1])
    expected = local.predict(sentences, tokenizer, tasks="sentiment")
    _same_predictions([{"sentiment": row} for row in loaded["sentiment"]], expected)
    torch.testing.assert_close(
        torch.tensor(loaded["embedding"]), local.encode(sentences, tokenizer), atol=1e-5, rtol=0
    )
