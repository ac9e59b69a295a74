#!/usr/bin/env python
"""GPU training throughput and model FLOPs utilisation: hydrabert vs the plain HF Trainer, in one run.

    bash benchmarks/gpu.sh                               # one H100/H200: eager, then torch.compile
    python benchmarks/bench_gpu.py [--compile] [--steps 300] [--batch-size 64]
    python benchmarks/bench_gpu.py --smoke               # tiny sizes on CPU: checks that the script runs
    python benchmarks/bench_gpu.py --write-lengths       # rebuild sentence_lengths.json from ../shared/data

Model: a randomly initialised BERT-base-sized encoder (12 layers, hidden 768, 12 heads, vocabulary 30522),
SDPA attention, bf16 autocast (`bf16=True`), fused AdamW, `--compile` for torch.compile, on both sides.
Data: two tasks shaped like SST-2 (2 labels) and TREC-6 (6 labels): random token ids whose lengths are
drawn from the real token-length histograms of those train sets (sentence_lengths.json: SST-2 mean 25
tokens, TREC 13), `--per-task` sentences each, truncated to `--max-length`.

- hydrabert: HydraBertModel with both heads, MultiTaskTrainer with its defaults (length-grouped batches,
  one task per batch), `--steps` optimizer steps.
- peer: for each task a `BertForSequenceClassification` of the same size, trained by `Trainer` with its
  defaults (random order, `DataCollatorWithPadding`) on exactly the sentences hydrabert's batches held.

Timing skips each run's first `--warmup-steps` steps (CUDA context, cuBLAS heuristics, compilation) and
synchronises the device at the window's ends only. Throughput counts the window's rows; MFU counts model
FLOPs on real (non-padding) tokens: 6 x (matmul parameters) per token plus 12 x layers x hidden x length^2
per sentence for attention, over the window's time, divided by the GPU's dense bf16 peak (H100/H200 SXM:
989 TFLOP/s; `--peak-tflops` for others). Prints one JSON line; exits 1 when the two sides did not train
the same rows and real tokens, or a loss is not finite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _speed  # sets the offline environment before transformers is imported
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
LENGTHS_FILE = HERE / "sentence_lengths.json"
TASKS = {"sentiment": 2, "question_type": 6}
BERT_BASE = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
)
SMOKE = dict(
    vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
)
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0}


def write_lengths(data_root: str | None) -> None:
    import collections

    from transformers import AutoTokenizer

    _speed.quiet()
    tokenizer = AutoTokenizer.from_pretrained(_speed.minilm_path())
    histogram = {}
    for name, task in _speed.load_demo_tasks(data_root).items():
        counts = collections.Counter(
            len(ids) for ids in tokenizer(list(task.splits["train"]["text"]))["input_ids"]
        )
        histogram[name] = {str(length): counts[length] for length in sorted(counts)}
    payload = {
        "source": "token counts ([CLS] and [SEP] included, no truncation) of the SST-2 and TREC-6 train "
        "sentences in ../shared/data, read as configs/demo.json reads them, with the bert-base-uncased "
        "vocabulary of all-MiniLM-L6-v2 (benchmarks/bench_gpu.py --write-lengths)",
        "tasks": histogram,
    }
    LENGTHS_FILE.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {LENGTHS_FILE}", file=sys.stderr)


def make_tokenizer(vocab_size: int):
    """A WordPiece tokenizer whose special ids are bert-base-uncased's ([PAD] 0, [UNK] 100, [CLS] 101,
    [SEP] 102): the collators only pad, but they need a real tokenizer to do it."""
    from transformers import BertTokenizerFast

    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    folder = Path(tempfile.mkdtemp(prefix="bench_gpu_tok_"))
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


def make_datasets(per_task: int, max_length: int, vocab_size: int, seed: int):
    import datasets

    histograms = json.loads(LENGTHS_FILE.read_text())["tasks"]
    rng = np.random.default_rng(seed)
    out = {}
    for name, num_labels in TASKS.items():
        lengths_, counts = zip(*((int(k), v) for k, v in histograms[name].items()), strict=True)
        probabilities = np.asarray(counts, dtype=float) / sum(counts)
        lengths = np.minimum(rng.choice(lengths_, size=per_task, p=probabilities), max_length)
        input_ids = [
            [101, *rng.integers(min(1000, vocab_size // 2), vocab_size, size=n - 2).tolist(), 102]
            for n in lengths.tolist()
        ]
        out[name] = datasets.Dataset.from_dict(
            {
                "input_ids": input_ids,
                "attention_mask": [[1] * len(ids) for ids in input_ids],
                "token_type_ids": [[0] * len(ids) for ids in input_ids],
                "labels": rng.integers(0, num_labels, size=per_task).tolist(),
                "length": lengths.tolist(),
            }
        )
    return out


class CountingCollator:
    """Wraps a collator; records each batch's rows, padded tokens, real tokens and sum of squared lengths
    on the CPU, before the batch reaches the device (no sync, nothing inside a compiled graph)."""

    def __init__(self, collator):
        self.collator = collator
        self.batches = []

    def __call__(self, features):
        batch = self.collator(features)
        lengths = batch["attention_mask"].sum(dim=1)
        self.batches.append(
            {
                "rows": int(batch["input_ids"].shape[0]),
                "padded": int(batch["input_ids"].numel()),
                "real": int(lengths.sum()),
                "squares": int((lengths**2).sum()),
            }
        )
        return batch


def window_clock(warmup_steps: int):
    from transformers import TrainerCallback

    class WindowClock(TrainerCallback):
        """Time from the end of step `warmup_steps` to the end of training, the device synchronised."""

        def __init__(self):
            self.start = self.seconds = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup_steps:
                _synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            _synchronize()
            if self.start is not None:
                self.seconds = time.perf_counter() - self.start

    return WindowClock()


def _synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_parameters(model) -> int:
    """Parameters used in matrix multiplications (embedding lookups excluded): 6 x this per token."""
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name and p.dim() == 2)


def model_flops(batches, num_parameters: int, layers: int, hidden: int) -> float:
    real = sum(b["real"] for b in batches)
    squares = sum(b["squares"] for b in batches)
    return 6.0 * num_parameters * real + 12.0 * layers * hidden * squares


def peak_flops(args) -> tuple[float | None, str]:
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "given"
    if not torch.cuda.is_available():
        return None, "cpu"
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12, name
    return None, name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-task", type=int, default=20000, help="sentences per task")
    parser.add_argument("--steps", type=int, default=300, help="hydrabert optimizer steps")
    parser.add_argument(
        "--warmup-steps", type=int, default=30, help="steps of each run left out of the timing"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile both sides (Trainer torch_compile)"
    )
    parser.add_argument(
        "--pad-to-multiple-of",
        type=int,
        default=None,
        help="both collators pad to a multiple of this (bounds the shapes torch.compile specialises on)",
    )
    parser.add_argument(
        "--attention",
        default="sdpa",
        help="attn_implementation on both sides: sdpa, eager, flash_attention_2 (needs flash-attn), ...",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true", help="tiny model and data on CPU, fp32: does it run?")
    parser.add_argument("--write-lengths", action="store_true", help="rebuild sentence_lengths.json and exit")
    parser.add_argument("--data-root", default=None, help="with --write-lengths: folder of sst2/ and trec/")
    if "--smoke" in (sys.argv[1:] if argv is None else argv):  # small defaults; flags given still win
        parser.set_defaults(per_task=96, steps=6, warmup_steps=2, batch_size=8)
    return parser.parse_args(argv)


def prepare_device(args) -> bool:
    """Whether the run is on CUDA (with TF32 matmuls); exits when there is no CUDA device and no --smoke."""
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops: a second thread only adds barrier waits
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        sys.exit("bench_gpu.py needs a CUDA device (or --smoke for a CPU check of the script)")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return cuda


def training_settings(args, cuda: bool) -> dict:
    """Both sides' TrainingArguments: the CPU benchmarks' settings plus bf16, fused AdamW, torch.compile
    when asked, and on CUDA two loader workers with pinned memory."""
    return _speed.trainer_settings(
        output_dir=tempfile.mkdtemp(prefix="bench_gpu_"),
        per_device_train_batch_size=args.batch_size,
        bf16=cuda,
        optim="adamw_torch_fused",
        torch_compile=args.compile,
        use_cpu=not cuda,
        seed=args.seed,
        dataloader_num_workers=2 if cuda else 0,
        dataloader_pin_memory=cuda,
    )


def train_hydrabert(args, sizes: dict, tokenizer, train_sets: dict, settings: dict) -> dict:
    """HydraBertModel with both heads and MultiTaskTrainer with its defaults, `--steps` steps; its batches,
    timing window, loss, and the rows per task its batches held (the peer's data)."""
    from transformers import set_seed

    from hydrabert import HydraBertConfig, HydraBertModel
    from hydrabert.data import MultiTaskCollator
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    set_seed(args.seed)
    encoder = dict(model_type="bert", max_position_embeddings=512, **sizes)
    specs = {name: {"num_labels": k} for name, k in TASKS.items()}
    model = HydraBertModel(HydraBertConfig(encoder=encoder, tasks=specs, attn_implementation=args.attention))
    collator = CountingCollator(MultiTaskCollator(tokenizer, pad_to_multiple_of=args.pad_to_multiple_of))
    clock = window_clock(args.warmup_steps)
    trainer = MultiTaskTrainer(
        model=model,
        args=MultiTaskTrainingArguments(max_steps=args.steps, **settings),
        train_dataset=train_sets,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[clock],
    )
    _, rows_per_task, _ = _speed.batches_per_task(trainer, args.steps)
    result, _ = _speed.timed_train(trainer)
    return {
        "all": collator.batches[: args.steps],
        "window": collator.batches[args.warmup_steps : args.steps],
        "seconds": clock.seconds,
        "loss": result.training_loss,
        "rows_per_task": rows_per_task,
        "parameters": matmul_parameters(model),
        "attention": model.config.encoder._attn_implementation,
    }


def train_peers(args, sizes: dict, tokenizer, train_sets: dict, rows_per_task: dict, settings: dict) -> dict:
    """Per task a BertForSequenceClassification of the same size, trained by `Trainer` with its defaults
    on the rows hydrabert's batches held; the runs' batches, summed window time and losses."""
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments, set_seed

    out = {"all": [], "window": [], "seconds": 0.0, "losses": {}, "parameters": 0, "attention": None}
    for name, num_labels in TASKS.items():
        if not rows_per_task[name]:
            continue
        set_seed(args.seed)
        config = BertConfig(
            num_labels=num_labels, max_position_embeddings=512, attn_implementation=args.attention, **sizes
        )
        model = BertForSequenceClassification(config)
        out["parameters"], out["attention"] = matmul_parameters(model), model.config._attn_implementation
        collator = CountingCollator(
            transformers.DataCollatorWithPadding(tokenizer, pad_to_multiple_of=args.pad_to_multiple_of)
        )
        clock = window_clock(args.warmup_steps)
        dataset = train_sets[name].select(rows_per_task[name])
        trainer, result, _ = _speed.train_peer(
            model,
            TrainingArguments(**settings),
            dataset,
            tokenizer,
            data_collator=collator,
            callbacks=[clock],
        )
        steps = trainer.state.global_step
        out["window"] += collator.batches[args.warmup_steps : steps]
        out["all"] += collator.batches[:steps]
        out["seconds"] += clock.seconds or 0.0
        out["losses"][name] = round(result.training_loss, 4)
    return out


def check(hydra: dict, peer: dict) -> list[str]:
    """Same rows and real tokens on both sides, finite losses, and a timing window on each."""

    def work(batches):
        return {"rows": sum(b["rows"] for b in batches), "real_tokens": sum(b["real"] for b in batches)}

    losses = [hydra["loss"], *peer["losses"].values()]
    failures = _speed.same_work_failures(work(hydra["all"]), work(peer["all"]), losses)
    if not hydra["seconds"] or not peer["seconds"]:
        failures.append("a timing window is empty: raise --steps or lower --warmup-steps")
    return failures


def side_stats(run: dict, sizes: dict, peak: float | None) -> dict:
    """One side's samples/s, real tokens/s, padding, model TFLOP/s and MFU over its timing window."""
    window, seconds = run["window"], run["seconds"]
    if not seconds:
        return {}
    rows = sum(b["rows"] for b in window)
    flops = model_flops(window, run["parameters"], sizes["num_hidden_layers"], sizes["hidden_size"])
    return {
        "samples_per_s": round(rows / seconds, 1),
        "real_tokens_per_s": round(sum(b["real"] for b in window) / seconds, 1),
        "padding_fraction": round(1 - sum(b["real"] for b in window) / sum(b["padded"] for b in window), 4),
        "model_tflops_per_s": round(flops / seconds / 1e12, 2),
        "mfu": round(flops / seconds / peak, 4) if peak else None,
        "window_steps": len(window),
        "window_seconds": round(seconds, 3),
    }


def result_line(args, cuda: bool, sizes: dict, hydra: dict, peer: dict) -> dict:
    import transformers

    peak, device = peak_flops(args)
    ours, theirs = side_stats(hydra, sizes, peak), side_stats(peer, sizes, peak)
    ratio = ours["samples_per_s"] / theirs["samples_per_s"] if ours and theirs else None
    return {
        "benchmark": "gpu_train" + ("_compile" if args.compile else "") + ("_smoke" if args.smoke else ""),
        "what": "training samples/s and MFU, BERT-base-sized encoder, bf16: MultiTaskTrainer vs HF Trainer",
        "hydrabert_samples_per_s": ours.get("samples_per_s"),
        "peer_samples_per_s": theirs.get("samples_per_s"),
        "ratio": round(ratio, 3) if ratio else None,
        "target": 1.5,
        "hydrabert": ours,
        "peer": theirs,
        "train_loss": {"hydrabert": round(hydra["loss"], 4), "peer": peer["losses"]},
        "attention": {"hydrabert": hydra["attention"], "peer": peer["attention"]},
        "device": device,
        "peak_tflops": peak / 1e12 if peak else None,
        "settings": {
            "encoder": sizes,
            **_speed.settings_of(args, "per_task", "steps", "warmup_steps", "batch_size", "max_length"),
            "bf16": cuda,
            "compile": args.compile,
            "pad_to_multiple_of": args.pad_to_multiple_of,
            "optim": "adamw_torch_fused",
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.write_lengths:
        write_lengths(args.data_root)
        return None
    cuda = prepare_device(args)
    sys.path.insert(0, str(HERE.parent))  # hydrabert from this checkout when it is not installed
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()

    sizes = SMOKE if args.smoke else BERT_BASE
    tokenizer = make_tokenizer(sizes["vocab_size"])
    train_sets = make_datasets(args.per_task, args.max_length, sizes["vocab_size"], args.seed)
    settings = training_settings(args, cuda)
    hydra = train_hydrabert(args, sizes, tokenizer, train_sets, settings)
    peer = train_peers(args, sizes, tokenizer, train_sets, hydra["rows_per_task"], settings)
    return _speed.emit(result_line(args, cuda, sizes, hydra, peer), check(hydra, peer), trailer={})


if __name__ == "__main__":
    main()
