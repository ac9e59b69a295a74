"""One serving contract: `predict`, the pipeline and `OnnxPredictor` give the same labels and scores on the same
sentences (one post-processing, `readable_predictions`), all truncate at the length the model was trained at
(`config.max_seq_length`) unless given `max_length=`, and `OnnxPredictor` runs where torch cannot be imported."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_WORDS, seeded_model

from hydrabert import HydraBertConfig, HydraBertModel
from hydrabert.configuration_hydrabert import readable_predictions

pytest.importorskip("onnxruntime")
from hydrabert.export import OnnxPredictor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINED_AT = 8
# Longer than TRAINED_AT tokens: what lies beyond token 8 must not change any output.
LONG = " ".join(TINY_WORDS[:6] * 4)
SENTENCES = ["good film", "what is the answer", LONG, "bad", LONG + " " + " ".join(TINY_WORDS[6:12])]


def _decisive(model):
    """Random heads give near-uniform probabilities; scaled up, labels cannot flip on rounding noise."""
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.mul_(50.0)
    return model.eval()


@pytest.fixture
def trained_at_8(tiny_tokenizer):
    model = _decisive(seeded_model())
    model.config.max_seq_length = TRAINED_AT
    return model


def _close(got, expected, abs_tol=1e-5):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert set(g) == set(e)
        for task in e:
            assert g[task]["label"] == e[task]["label"], task
            assert g[task]["score"] == pytest.approx(e[task]["score"], abs=abs_tol), task


def test_predict_pipeline_and_onnx_agree_and_truncate_at_the_training_length(
    trained_at_8, tiny_tokenizer, tmp_path
):
    from transformers import pipeline

    from hydrabert.pipeline_registration import PIPELINE_TASK, register_pipeline

    model = trained_at_8
    assert len(tiny_tokenizer(LONG)["input_ids"]) > TRAINED_AT
    seen_lengths = []
    hook = model.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen_lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    predicted = model.predict(SENTENCES, tiny_tokenizer)
    assert max(seen_lengths) == TRAINED_AT  # the default truncation is the training length
    seen_lengths.clear()
    model.predict(SENTENCES, tiny_tokenizer, max_length=16)
    assert max(seen_lengths) == 16  # an explicit max_length wins
    seen_lengths.clear()
    embeddings = model.encode(SENTENCES, tiny_tokenizer)
    assert max(seen_lengths) == TRAINED_AT

    register_pipeline()
    classifier = pipeline(PIPELINE_TASK, model=model, tokenizer=tiny_tokenizer, device="cpu")
    seen_lengths.clear()
    _close(classifier(SENTENCES), predicted)
    assert max(seen_lengths) == TRAINED_AT
    hook.remove()

    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    assert HydraBertConfig.from_pretrained(tmp_path / "model").max_seq_length == TRAINED_AT
    model.export_onnx(tmp_path / "onnx", tokenizer=tiny_tokenizer)
    predictor = OnnxPredictor(tmp_path / "onnx")
    assert predictor.max_seq_length == TRAINED_AT
    _close(predictor.predict(SENTENCES), predicted)
    np.testing.assert_allclose(predictor.encode(SENTENCES), embeddings.numpy(), atol=1e-5, rtol=0)
    # The long sentences and their first 8 tokens give the same outputs: nothing beyond was read.
    first_8 = tiny_tokenizer.decode(tiny_tokenizer(LONG)["input_ids"][1 : TRAINED_AT - 1])
    _close(predictor.predict([first_8]), [predicted[2]])


def test_onnx_sessions_take_their_thread_count_from_an_argument(tiny_model, tiny_tokenizer, tmp_path):
    import onnxruntime

    from hydrabert.export.onnx_predictor import physical_cores

    tiny_model.export_onnx(tmp_path, tokenizer=tiny_tokenizer)

    def threads(predictor):
        return predictor.session.get_session_options().intra_op_num_threads

    assert threads(OnnxPredictor(tmp_path)) == physical_cores() >= 1  # the default: the physical cores
    assert threads(OnnxPredictor(tmp_path, threads=1)) == 1
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    assert threads(OnnxPredictor(tmp_path, session_options=options)) == 2  # the caller's options stand
    assert (
        threads(OnnxPredictor(tmp_path, session_options=options, threads=1)) == 1
    )  # unless threads is given
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        OnnxPredictor(tmp_path, threads=0)


def test_models_saved_before_max_seq_length_load_and_use_the_tokenizers_limit(tiny_tokenizer, tmp_path):
    model = seeded_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("max_seq_length", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HydraBertModel.from_pretrained(tmp_path)
    assert loaded.config.max_seq_length is None
    with pytest.raises(ValueError, match="max_seq_length must be a positive integer or None, got 0"):
        HydraBertConfig(max_seq_length=0)


@pytest.mark.parametrize(
    ("spec", "logits", "expected"),
    [
        (
            {"labels": ["neg", "pos"], "problem_type": "single_label_classification"},
            [[0.0, np.log(3.0)]],
            [{"label": "pos", "score": 0.75}],
        ),
        (
            {"labels": ["a", "b", "c"], "problem_type": "multi_label_classification"},
            [[0.0, 2.0, -2.0]],
            [{"label": ["b"], "score": [1 / (1 + np.exp(-2.0))]}],
        ),
        (
            {"labels": ["value"], "problem_type": "regression"},
            [[1.5], [-0.25]],
            [{"score": 1.5}, {"score": -0.25}],
        ),
    ],
    ids=["single", "multi", "regression"],
)
def test_readable_predictions_by_hand(spec, logits, expected):
    got = readable_predictions(spec, np.array(logits, dtype=np.float32))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.get("label") == e.get("label")
        assert np.allclose(g["score"], e["score"], atol=1e-7)
    if spec["problem_type"] == "single_label_classification":
        top = readable_predictions(spec, np.array(logits), top_k=2)[0]
        assert [p["label"] for p in top] == ["pos", "neg"] and top[1]["score"] == pytest.approx(0.25)


# A Python whose site-packages lack torch (every other installed package visible): `import torch` fails there,
# and transformers sees no torch, as on an ONNX Runtime-only server.
WITHOUT_TORCH = """
import json, sys
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch is importable: the test would prove nothing")
from hydrabert.export import OnnxPredictor
predictor = OnnxPredictor(sys.argv[1])
print("RESULT" + json.dumps({"predict": predictor.predict(json.loads(sys.argv[2])),
                             "encode": predictor.encode(json.loads(sys.argv[2])).tolist()}))
"""


def _site_without_torch(tmp_path) -> str:
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    for source in site.getsitepackages():
        for entry in os.listdir(source):
            if (
                entry.startswith(("torch", "functorch"))
                or entry.endswith(".pth")
                or (site_dir / entry).exists()
            ):
                continue
            os.symlink(os.path.join(source, entry), site_dir / entry)
    return str(site_dir)


def test_onnx_predictor_runs_where_torch_cannot_be_imported(trained_at_8, tiny_tokenizer, tmp_path):
    model = trained_at_8
    model.export_onnx(tmp_path / "onnx", tokenizer=tiny_tokenizer)
    expected = {
        "predict": model.predict(SENTENCES, tiny_tokenizer),
        "encode": model.encode(SENTENCES, tiny_tokenizer),
    }
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, _site_without_torch(tmp_path)])
    # -S: no site-packages of its own (its .pth files would put the real one back); PYTHONPATH gives the copy.
    result = subprocess.run(
        [sys.executable, "-S", "-c", WITHOUT_TORCH, str(tmp_path / "onnx"), json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.split("RESULT", 1)[1])
    _close(got["predict"], expected["predict"])
    np.testing.assert_allclose(np.array(got["encode"]), expected["encode"].numpy(), atol=1e-5, rtol=0)
