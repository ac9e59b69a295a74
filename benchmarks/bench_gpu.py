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
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

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
    sys.path.insert(0, str(HERE))
    import collections

    import _speed
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


def main():
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
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true", help="tiny model and data on CPU, fp32: does it run?")
    parser.add_argument("--write-lengths", action="store_true", help="rebuild sentence_lengths.json and exit")
    parser.add_argument("--data-root", default=None, help="with --write-lengths: folder of sst2/ and trec/")
    if "--smoke" in sys.argv[1:]:  # small defaults; flags given still win
        parser.set_defaults(per_task=96, steps=6, warmup_steps=2, batch_size=8)
    args = parser.parse_args()
    if args.write_lengths:
        write_lengths(args.data_root)
        return
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops: a second thread only adds barrier waits
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        sys.exit("bench_gpu.py needs a CUDA device (or --smoke for a CPU check of the script)")

    import datasets
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, set_seed

    sys.path.insert(0, str(HERE.parent))
    from hydrabert import HydraBertConfig, HydraBertModel
    from hydrabert.data import MultiTaskCollator
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    sizes = SMOKE if args.smoke else BERT_BASE
    encoder = dict(model_type="bert", max_position_embeddings=512, **sizes)
    tokenizer = make_tokenizer(sizes["vocab_size"])
    train_sets = make_datasets(args.per_task, args.max_length, sizes["vocab_size"], args.seed)
    output_dir = tempfile.mkdtemp(prefix="bench_gpu_")
    common = dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        bf16=cuda,
        optim="adamw_torch_fused",
        torch_compile=args.compile,
        use_cpu=not cuda,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=2 if cuda else 0,
        dataloader_pin_memory=cuda,
    )
    specs = {name: {"num_labels": k} for name, k in TASKS.items()}

    # ---------------------------------------------------------------------------------- hydrabert
    set_seed(args.seed)
    hydra = HydraBertModel(HydraBertConfig(encoder=encoder, tasks=specs, attn_implementation="sdpa"))
    hydra_collator = CountingCollator(
        MultiTaskCollator(tokenizer, pad_to_multiple_of=args.pad_to_multiple_of)
    )
    hydra_clock = window_clock(args.warmup_steps)
    hydra_args = MultiTaskTrainingArguments(max_steps=args.steps, **common)
    trainer = MultiTaskTrainer(
        model=hydra,
        args=hydra_args,
        train_dataset=train_sets,
        processing_class=tokenizer,
        data_collator=hydra_collator,
        callbacks=[hydra_clock],
    )
    rows_per_task = {name: [] for name in TASKS}
    for batch in trainer.get_train_batch_sampler().epoch_batches(0)[: args.steps]:
        for index in batch:
            name, row = trainer.train_dataset.locate(index)
            rows_per_task[name].append(row)
    # The Trainer prints its final metrics on stdout, which carries the JSON line only.
    with contextlib.redirect_stdout(sys.stderr):
        hydra_result = trainer.train()
    hydra_window = hydra_collator.batches[args.warmup_steps : args.steps]
    hydra_attention = hydra.config.encoder._attn_implementation

    # --------------------------------------------------------------------------------------- peer
    peer_window, peer_seconds, peer_losses, peer_all = [], 0.0, {}, []
    peer_parameters, peer_attention = 0, None
    for name, num_labels in TASKS.items():
        if not rows_per_task[name]:
            continue
        set_seed(args.seed)
        peer = BertForSequenceClassification(
            BertConfig(
                num_labels=num_labels, max_position_embeddings=512, attn_implementation="sdpa", **sizes
            )
        )
        peer_parameters = matmul_parameters(peer)
        peer_attention = peer.config._attn_implementation
        collator = CountingCollator(
            transformers.DataCollatorWithPadding(tokenizer, pad_to_multiple_of=args.pad_to_multiple_of)
        )
        clock = window_clock(args.warmup_steps)
        peer_trainer = Trainer(
            model=peer,
            args=TrainingArguments(**common),
            train_dataset=train_sets[name].select(rows_per_task[name]),
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[clock],
        )
        with contextlib.redirect_stdout(sys.stderr):
            result = peer_trainer.train()
        steps = peer_trainer.state.global_step
        peer_window += collator.batches[args.warmup_steps : steps]
        peer_all += collator.batches[:steps]
        peer_seconds += clock.seconds or 0.0
        peer_losses[name] = round(result.training_loss, 4)

    # ------------------------------------------------------------------------------------ report
    failures = []
    hydra_all = hydra_collator.batches[: args.steps]
    for key in ("rows", "real"):
        ours, theirs = sum(b[key] for b in hydra_all), sum(b[key] for b in peer_all)
        if ours != theirs:
            failures.append(f"{key}: hydrabert trained {ours}, peer {theirs}")
    losses = [hydra_result.training_loss, *peer_losses.values()]
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"non-finite training loss: {losses}")
    if not hydra_clock.seconds or not peer_seconds:
        failures.append("a timing window is empty: raise --steps or lower --warmup-steps")

    peak, device = peak_flops(args)
    layers, hidden = sizes["num_hidden_layers"], sizes["hidden_size"]

    def side(window, seconds, parameters):
        if not seconds:
            return {}
        rows = sum(b["rows"] for b in window)
        flops = model_flops(window, parameters, layers, hidden)
        return {
            "samples_per_s": round(rows / seconds, 1),
            "real_tokens_per_s": round(sum(b["real"] for b in window) / seconds, 1),
            "padding_fraction": round(
                1 - sum(b["real"] for b in window) / sum(b["padded"] for b in window), 4
            ),
            "model_tflops_per_s": round(flops / seconds / 1e12, 2),
            "mfu": round(flops / seconds / peak, 4) if peak else None,
            "window_steps": len(window),
            "window_seconds": round(seconds, 3),
        }

    ours = side(hydra_window, hydra_clock.seconds, matmul_parameters(hydra))
    theirs = side(peer_window, peer_seconds, peer_parameters)
    ratio = ours["samples_per_s"] / theirs["samples_per_s"] if ours and theirs else None
    result = {
        "benchmark": "gpu_train" + ("_compile" if args.compile else "") + ("_smoke" if args.smoke else ""),
        "what": "training samples/s and MFU, BERT-base-sized encoder, bf16: MultiTaskTrainer vs HF Trainer",
        "hydrabert_samples_per_s": ours.get("samples_per_s"),
        "peer_samples_per_s": theirs.get("samples_per_s"),
        "ratio": round(ratio, 3) if ratio else None,
        "target": 1.5,
        "hydrabert": ours,
        "peer": theirs,
        "train_loss": {"hydrabert": round(hydra_result.training_loss, 4), "peer": peer_losses},
        "attention": {"hydrabert": hydra_attention, "peer": peer_attention},
        "device": device,
        "peak_tflops": peak / 1e12 if peak else None,
        "settings": {
            "encoder": sizes,
            "per_task": args.per_task,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "bf16": cuda,
            "compile": args.compile,
            "pad_to_multiple_of": args.pad_to_multiple_of,
            "optim": "adamw_torch_fused",
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "ok": not failures,
        "failures": failures,
    }
    print(json.dumps(result), flush=True)
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
