#!/usr/bin/env python
"""Renders benchmarks/results/*.json (written by experiments.py) into the tables and plots of
docs/transfer.md and docs/results.md.

Each doc holds marked blocks, `<!-- results:NAME -->` ... `<!-- /results:NAME -->`; this script
replaces what is between the markers and leaves the prose around them alone, so every number in
those tables comes from a recorded run.

    python benchmarks/report.py
"""

from __future__ import annotations

import json
import os
import re
import statistics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
DOCS = os.path.join(REPO, "docs")


def load(group: str) -> list[dict] | dict:
    """benchmarks/results/<group>.json as written (a list of run records, or one experiment's record); [] if absent."""
    path = os.path.join(RESULTS, f"{group}.json")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return json.load(handle)


def fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def metric(record: dict, key: str):
    return record["metrics"].get(key)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def commands(records: list[dict]) -> str:
    if not records:
        return ""
    lines = [f"- `{r['name']}` ({r['wall_seconds']:.0f} s): `{r['command']}`" for r in records]
    return (
        f"Machine: {records[0]['machine']}.\n\n<details><summary>Commands</summary>\n\n"
        + "\n".join(lines)
        + "\n\n</details>"
    )


# Task name in a transfer config -> the data set it reads.
TRANSFER_SETS = {"citation_intent": "SciCite", "sentence_role": "CSAbstruct"}


def transfer_block() -> str:
    records = load("transfer")
    if not records:
        return "_Not run yet: `python benchmarks/experiments.py transfer`._"
    sections = []
    for task, data_set in TRANSFER_SETS.items():
        runs = [r for r in records if metric(r, f"test_{task}_f1") is not None]
        if not runs:
            continue
        rows = [
            [
                f"`{r['name']}`",
                fmt(metric(r, f"test_{task}_f1")),
                fmt(metric(r, f"test_{task}_accuracy")),
                fmt(metric(r, f"eval_{task}_f1")),
                f"{metric(r, 'train_runtime'):.0f}" if metric(r, "train_runtime") else "–",
            ]
            for r in runs
        ]
        body = table(["run", "test macro-F1", "test accuracy", "dev macro-F1", "train seconds"], rows)
        plot = bar_plot(
            "transfer.png" if data_set == "SciCite" else f"transfer_{data_set.lower()}.png",
            [r["name"] for r in runs],
            {"test macro-F1": [metric(r, f"test_{task}_f1") or 0 for r in runs]},
            f"{data_set} test macro-F1 (MiniLM, same budget)",
        )
        sections.append(
            f"**{data_set}**\n\n{body}\n\n![{data_set} macro-F1 per run]({plot})\n\n{commands(runs)}"
        )
    return "\n\n".join(sections)


def by_setting(records: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their name without the `_seed<N>` suffix, in order."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["name"].rsplit("_seed", 1)[0], []).append(r)
    return groups


def seeds_cell(runs: list[dict], key: str) -> str:
    """One run's value, or the mean ± sd over the runs (seeds) that report `key`."""
    values = [metric(r, key) for r in runs if metric(r, key) is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0])
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def multitask_block() -> str:
    records = load("multitask") + load("multitask_3_epochs")
    if not records:
        return "_Not run yet: `python benchmarks/experiments.py multitask`._"
    rows = []
    for kind, runs in by_setting(records).items():
        cells = [f"`{kind}`", str(len(runs))]
        for task in ("sentiment", "question_type"):
            for name in ("accuracy", "f1"):
                cells.append(seeds_cell(runs, f"test_{task}_{name}"))
        rows.append(cells)
    rows.append(paired_difference_row(records))
    header = ["model", "seeds", "SST-2 acc", "SST-2 macro-F1", "TREC-6 acc", "TREC-6 macro-F1"]
    return f"{table(header, rows)}\n\n{commands(records)}"


def paired_difference_row(records: list[dict]) -> list[str]:
    """Multi-task minus single-task, seed by seed (the same seed draws the same data order and head
    initialisation on both sides), as mean ± standard deviation over the seeds run on both sides."""
    by_name = {r["name"]: r for r in records}
    single = {"sentiment": "sentiment_only", "question_type": "question_type_only"}
    cells, seeds_used = [], set()
    for task in ("sentiment", "question_type"):
        for name in ("accuracy", "f1"):
            key = f"test_{task}_{name}"
            differences = []
            for r in records:
                kind, _, seed = r["name"].rpartition("_seed")
                other = by_name.get(f"{single[task]}_seed{seed}")
                if kind == "multitask" and other is not None and metric(other, key) is not None:
                    differences.append(metric(r, key) - metric(other, key))
                    seeds_used.add(seed)
            if not differences:
                cells.append("–")
            elif len(differences) == 1:
                cells.append(f"{differences[0]:+.4f}")
            else:
                cells.append(f"{statistics.mean(differences):+.4f} ± {statistics.stdev(differences):.4f}")
    return ["`multitask` − single-task, paired by seed", str(len(seeds_used)), *cells]


def sweep_block(group: str, settings: list[str], label: str) -> str:
    records = load(group)
    if not records:
        return f"_Not run yet: `python benchmarks/experiments.py {group}`._"
    task_of = {"sst2": "sentiment", "trec": "question_type", "scicite": "citation_intent"}
    found = {r["name"]: r for r in records}
    rows = []
    series = {}
    for data, task in task_of.items():
        cells = [data]
        values = []
        for setting in settings:
            record = found.get(f"{data}_{setting}")
            value = metric(record, f"test_{task}_f1") if record else None
            cells.append(fmt(value))
            values.append(value or 0)
        rows.append(cells)
        series[data] = values
    plot = bar_plot(f"{group}.png", settings, series, f"Test macro-F1 by {label}")
    return f"{table(['data (test macro-F1)', *settings], rows)}\n\n![{label}]({plot})\n\n{commands(records)}"


def add_task_block() -> str:
    records = load("add_task")
    base = {r["name"]: r for r in load("multitask")}.get("multitask_seed42")
    if not records or base is None:
        return "_Not run yet: `python benchmarks/experiments.py add_task` (after the multitask group)._"
    rows = [
        [
            "before (SST-2 + TREC-6 model)",
            fmt(metric(base, "test_sentiment_accuracy")),
            fmt(metric(base, "test_question_type_accuracy")),
            "–",
        ]
    ]
    for r in records:
        rows.append(
            [
                f"`{r['name']}`",
                fmt(metric(r, "test_sentiment_accuracy")),
                fmt(metric(r, "test_question_type_accuracy")),
                fmt(metric(r, "test_citation_intent_f1")),
            ]
        )
    return (
        table(["model", "SST-2 test acc", "TREC-6 test acc", "SciCite test macro-F1"], rows)
        + "\n\n"
        + commands(records)
    )


def _fmt_epochs(value) -> str:
    return "–" if value is None else f"{value:g}"


def shared_sources_block() -> str:
    records = {r["name"]: r for r in load("shared_sources")}
    if not records:
        return "_Not run yet: `python benchmarks/experiments.py shared_sources`._"
    rows = []
    for name in ("sst5_shared", "sst5_duplicated", "sst5_shared_2ep"):
        r = records.get(name)
        if r is None:
            continue
        rows.append(
            [
                f"`{name}`",
                str(r["metrics"].get("train_samples", "–")),
                _fmt_epochs(r["metrics"].get("epoch")),
                f"{r['metrics']['train_runtime']:.0f} s",
                fmt(metric(r, "test_sentiment_fine_accuracy")),
                fmt(metric(r, "test_sentiment_fine_f1")),
                fmt(metric(r, "test_polarity_accuracy")),
                fmt(metric(r, "test_polarity_f1")),
            ]
        )
    header = [
        "config",
        "rows encoded per epoch",
        "epochs",
        "training time",
        "SST-5 acc",
        "SST-5 macro-F1",
        "polarity acc",
        "polarity macro-F1",
    ]
    return table(header, rows) + "\n\n" + commands(list(records.values()))


def bar_plot(filename: str, labels: list[str], series: dict[str, list[float]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels) * max(1, len(series)) / 2), 3.6))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        positions = [x + i * width for x in range(len(labels))]
        bars = ax.bar(positions, values, width=width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels, fontsize=8)
    lows = [v for values in series.values() for v in values if v]
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 0.1), min(1.0, max(lows) + 0.05))
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.join(DOCS, "img"), exist_ok=True)
    fig.savefig(os.path.join(DOCS, "img", filename), dpi=110)
    plt.close(fig)
    return f"img/{filename}"


def _per_label_f1(run: dict) -> dict[str, float]:
    """Label -> test F1, in the task's label order (the experiment reports them as test_<task>_f1_<label>)."""
    prefix = f"test_{run['task']}_f1_"
    return {
        key[len(prefix) :]: value
        for key, value in run["metrics"].items()
        if key.startswith(prefix) and key != prefix + "declared_labels"
    }


def _class_weights_run_row(run: dict) -> list[str]:
    prefix = f"test_{run['task']}_"
    per_label = _per_label_f1(run)
    return [
        run["data"],
        str(run["seed"]),
        run["weighting"],
        fmt(metric(run, prefix + "f1")),
        fmt(metric(run, prefix + "accuracy")),
        f"{metric(run, prefix + 'labels_never_predicted'):.0f}",
        ", ".join(f"{label} {value:.3f}" for label, value in per_label.items()),
    ]


def class_weights_block() -> str:
    """benchmarks/class_weights_experiment.py's record: macro-F1 with and without balanced class weights."""
    record = load("class_weights")
    if not record:
        return ""
    runs, summary = record["runs"], record["summary"]

    def mean_std(stats) -> str:
        return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats else "–"

    def signed(stats) -> str:
        return f"{stats['mean']:+.4f} ± {stats['std']:.4f}" if stats else "–"

    overview = table(
        [
            "data (test)",
            "seeds",
            "macro-F1, no weights",
            "macro-F1, balanced",
            "balanced − none (paired by seed)",
        ]
        + ["accuracy, no weights", "accuracy, balanced"],
        [
            [
                data,
                str(len(result["none"]["seeds"])),
                mean_std(result["none"]["f1"]),
                mean_std(result["balanced"]["f1"]),
                signed(result["balanced_minus_none_f1"]),
                mean_std(result["none"]["accuracy"]),
                mean_std(result["balanced"]["accuracy"]),
            ]
            for data, result in summary.items()
        ],
    )
    per_seed = table(
        ["data", "seed", "weighting", "macro-F1", "accuracy", "labels never predicted", "per-label F1"],
        [_class_weights_run_row(r) for r in runs],
    )
    weights = "; ".join(
        f"{r['data']}: "
        + ", ".join(f"{label} {w:.3f}" for label, w in zip(_per_label_f1(r), r["class_weights"], strict=True))
        for r in runs
        if r["weighting"] == "balanced" and r["seed"] == runs[0]["seed"]
    )
    commands_list = "\n".join(
        f"- {r['data']}, {r['weighting']}, seed {r['seed']} ({r['wall_seconds']:.0f} s): `{r['run_mtl_command']}`"
        for r in runs
    )
    return (
        f"{overview}\n\n{per_seed}\n\nBalanced weights: {weights}.\n\n"
        f"Machine: {record['machine']}. Command: `{record['command']}`.\n\n"
        "<details><summary>Each run as a run_mtl.py command (same training and macro-F1; the per-label "
        f"numbers come from the experiment script)</summary>\n\n{commands_list}\n\n</details>"
    )


def early_stopping_plot(record: dict, filename: str = "early_stopping.png") -> str:
    """Validation and test macro-F1 per epoch for each data set, the fixed budget's test score, and where
    the default patience kept and stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = record["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.3), squeeze=False)
    for axis, run in zip(axes[0], runs, strict=True):
        task, curve = run["task"], run["curve"]["curve"]
        epochs = [row["epoch"] for row in curve]
        axis.plot(epochs, [row[f"eval_{task}_f1"] for row in curve], "o-", ms=3, label="validation")
        axis.plot(epochs, [row[f"test_{task}_f1"] for row in curve], "s-", ms=3, label="test")
        fixed = run["fixed"]["test"][f"test_{task}_f1"]
        axis.axhline(fixed, color="grey", ls=":", label=f"test, fixed {run['fixed_epochs']} epochs")
        chosen = run["early_stopping"][str(record["default_patience"])]
        axis.axvline(
            chosen["kept_epoch"], color="green", ls="--", label=f"kept (patience {chosen['patience']})"
        )
        if chosen["stopped_early"]:
            axis.axvline(chosen["stopped_epoch"], color="red", ls="--", lw=0.8, label="stopped")
        axis.set_title(f"{run['data']} ({run['curve']['sizes']['train']} train rows)", fontsize=9)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro-F1")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.join(DOCS, "img"), exist_ok=True)
    fig.savefig(os.path.join(DOCS, "img", filename), dpi=110)
    plt.close(fig)
    return f"img/{filename}"


EARLY_STOPPING_THRESHOLD = 0.005


def _early_stop(curve: list[dict], task: str, patience: int, threshold: float = 0.0) -> dict:
    """transformers' rule on a learning curve: the count grows at each evaluation that does not beat the best
    validation selection score by more than `threshold`; the best (any improvement) is what is kept."""
    best = count = 0
    kept = stop = None
    for row in curve:
        value = row["eval_selection_score"]
        if kept is None or (value > best and value - best > threshold):
            count = 0
        else:
            count += 1
        if kept is None or value > best:
            best, kept = value, row
        if count >= patience:
            stop = row
            break
    last = stop or curve[-1]
    return {
        "kept_epoch": kept["epoch"],
        "stopped_epoch": last["epoch"],
        "stopped_early": stop is not None,
        "test_f1": kept[f"test_{task}_f1"],
    }


def early_stopping_block() -> str:
    """benchmarks/early_stopping_experiment.py's record: fixed budget vs the learning curve and what each
    patience finds on it, the curves, the verification run, the commands."""
    record = load("early_stopping")
    if not record:
        return ""
    p, cap = str(record["default_patience"]), record["epochs"]
    rows = []
    for run in record["runs"]:
        task, fixed, curve = run["task"], run["fixed"], run["curve"]["curve"]
        chosen = run["early_stopping"][p]
        best = max(curve, key=lambda row: row[f"test_{task}_f1"])
        rows.append(
            [
                f"{run['data']} ({run['curve']['sizes']['train']})",
                f"{fixed['test'][f'test_{task}_f1']:.4f} ({fixed['test'][f'test_{task}_accuracy']:.4f})",
                f"{fixed['train_seconds']:.0f} s",
                f"{chosen['stopped_epoch']:g}" + ("" if chosen["stopped_early"] else " (cap)"),
                f"{chosen['kept_epoch']:g}",
                f"{chosen['test_f1']:.4f} ({chosen['test_accuracy']:.4f})",
                f"{chosen['wall_seconds']:.0f} s",
                f"{curve[-1][f'test_{task}_f1']:.4f}",
                f"{best[f'test_{task}_f1']:.4f} (epoch {best['epoch']:g})",
            ]
        )
    overview = table(
        [
            "data (train rows)",
            f"fixed {record['runs'][0]['fixed_epochs']} epochs: test macro-F1 (accuracy)",
            "time",
            f"patience {p}: stopped at epoch",
            "kept epoch",
            "test macro-F1 (accuracy)",
            "time",
            f"epoch {cap}: test macro-F1",
            "best test macro-F1 of any epoch",
        ],
        rows,
    )

    def cell(e: dict) -> str:
        stopped = f"{e['stopped_epoch']:g}" + ("" if e["stopped_early"] else " (cap)")
        return f"{e['kept_epoch']:g} / {stopped}: {e['test_f1']:.4f}"

    patiences = sorted(record["runs"][0]["early_stopping"], key=int)
    patience_rows = [
        [run["data"]]
        + [cell(run["early_stopping"][key]) for key in patiences]
        + [cell(_early_stop(run["curve"]["curve"], run["task"], int(p), EARLY_STOPPING_THRESHOLD))]
        for run in record["runs"]
    ]
    by_patience = table(
        ["data"]
        + [f"patience {key}" for key in patiences]
        + [f"patience {p}, threshold {EARLY_STOPPING_THRESHOLD}"],
        patience_rows,
    )
    curves = []
    for run in record["runs"]:
        task = run["task"]
        cells = ", ".join(
            f"{row['epoch']:g}: {row[f'eval_{task}_f1']:.3f} / {row[f'test_{task}_f1']:.3f}"
            for row in run["curve"]["curve"]
        )
        curves.append(f"- {run['data']} (epoch: validation / test macro-F1): {cells}")
    verified = []
    for run in record["runs"]:
        if "verified" not in run:
            continue
        real, derived, task = run["verified"], run["early_stopping"][p], run["task"]
        verified.append(
            f"- {run['data']}: `run_mtl.py ... --early_stopping_patience {p}` stopped at epoch "
            f"{real['last_epoch']:g}, kept epoch {real['kept_epoch']:g}, test macro-F1 "
            f"{real['test'][f'test_{task}_f1']:.4f} (accuracy {real['test'][f'test_{task}_accuracy']:.4f}), "
            f"{real['train_seconds']:.0f} s of training with a checkpoint per epoch (derived from the curve: "
            f"stopped at epoch {derived['stopped_epoch']:g}, kept {derived['kept_epoch']:g}, test macro-F1 "
            f"{derived['test_f1']:.4f}, {derived['wall_seconds']:.0f} s)"
        )
    commands_list = "\n".join(
        f"- {run['data']}, {kind}: `{run[kind]['run_mtl_command']}`"
        for run in record["runs"]
        for kind in ("fixed", "curve", "verified")
        if kind in run
    )
    image = early_stopping_plot(record)
    return (
        f"{overview}\n\n![Learning curves]({image})\n\n{by_patience}\n\n"
        + "\n".join(curves)
        + "\n\n"
        + ("\n".join(verified) + "\n\n" if verified else "")
        + f"Machine: {record['machine']}. Command: `{record['command']}`.\n\n"
        "<details><summary>Each run as a run_mtl.py command (the curve runs also evaluated the test split after "
        f"every epoch, which run_mtl.py does not)</summary>\n\n{commands_list}\n\n</details>"
    )


def embeddings_block() -> str:
    """STS-B test Spearman of the trained model's embedding beside its task accuracies, per setting (mean ± sd
    over seeds), and the fresh models of benchmarks/results/embedding_fresh.json."""
    records = load("embeddings")
    if not records:
        return "_Not run yet: `python benchmarks/experiments.py embeddings`._"
    rows = []
    for kind, runs in by_setting(records).items():
        keys = ("test_sts_spearman", "test_sentiment_accuracy", "test_question_type_accuracy")
        rows.append([f"`{kind}`", str(len(runs)), *(seeds_cell(runs, key) for key in keys)])
    header = ["run", "seeds", "STS-B test Spearman", "SST-2 acc", "TREC-6 acc"]
    return f"{table(header, rows)}\n\n{commands(records)}"


def embedding_fresh_block() -> str:
    result = load("embedding_fresh")
    if not result:
        return "_Not run yet: `python benchmarks/bench_embedding.py --fresh --output benchmarks/results/embedding_fresh.json`._"
    rows = [[name, fmt(row["spearman"]), fmt(row["pearson"])] for name, row in result["rows"].items()]
    machine = result["machine"]
    return (
        table(["embedding (fresh, before any training)", "STS-B test Spearman", "Pearson"], rows)
        + f"\n\n{result['pairs']} test pairs; {machine['cpu']}, torch {machine['torch']}. Command: "
        "`python benchmarks/bench_embedding.py --fresh --max_length 64 --output benchmarks/results/embedding_fresh.json`."
    )


def bf16_block() -> str:
    """The main job in fp32 and bf16 (3 seeds each): test accuracies and STS-B Spearman (mean ± sd), train time;
    and benchmarks/results/bf16.json's speed rows when recorded."""
    records = load("bf16")
    if not records:
        return "_Not run yet: `python benchmarks/experiments.py bf16`._"
    rows = []
    for kind, runs in by_setting(records).items():
        keys = ("test_sentiment_accuracy", "test_question_type_accuracy", "test_sts_spearman")
        runtime = statistics.mean(run["metrics"]["train_runtime"] for run in runs)
        rows.append([f"`{kind}`", str(len(runs)), *(seeds_cell(runs, key) for key in keys), f"{runtime:.0f}"])
    header = ["precision", "seeds", "SST-2 acc", "TREC-6 acc", "STS-B Spearman", "train s (mean)"]
    return f"{table(header, rows)}\n\n{commands(records)}"


BLOCKS = {
    "bf16": bf16_block,
    "embedding_fresh": embedding_fresh_block,
    "embeddings": embeddings_block,
    "transfer": transfer_block,
    "multitask": multitask_block,
    "llrd": lambda: sweep_block("llrd", ["xi1.0", "xi0.95", "xi0.9", "xi0.8"], "layer-wise decay ξ"),
    "freeze": lambda: sweep_block("freeze", ["none", "encoder", "lower_layers", "gradual"], "freeze policy"),
    "add_task": add_task_block,
    "class_weights": class_weights_block,
    "shared_sources": shared_sources_block,
    "early_stopping": early_stopping_block,
}


def render(doc: str) -> None:
    path = os.path.join(DOCS, doc)
    with open(path) as handle:
        text = handle.read()
    for name, block in BLOCKS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m, b=block: m.group(1) + b() + "\n" + m.group(2), text)
    with open(path, "w") as handle:
        handle.write(text)
    print(f"rendered {path}")


if __name__ == "__main__":
    for doc in ("transfer.md", "results.md", "embeddings.md"):
        if os.path.exists(os.path.join(DOCS, doc)):
            render(doc)
