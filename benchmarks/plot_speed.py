#!/usr/bin/env python
"""Renders the speed benchmarks' JSON lines (benchmarks/results/speed_*.json, saved with `tee` from what the
benchmarks printed) into docs/benchmarks.md's table and docs/benchmarks_speed.png.

The doc holds a marked block, `<!-- results:speed -->` ... `<!-- /results:speed -->`; this script replaces
what is between the markers and leaves the prose alone, so every number in the table is a recorded one.

    python benchmarks/plot_speed.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmarks_speed.png"
# (file stem, label, what the peer is)
BENCHMARKS = [
    ("speed_train", "training, first 32 batches of the full sets (CPU)", "HF Trainer, 1 model per task"),
    ("speed_train_subset", "training, 1 epoch of 1024 + 1024 (CPU)", "HF Trainer, 1 model per task"),
    ("speed_frozen", "frozen encoder, 5 epochs (CPU)", "same trainer, cache off"),
    ("speed_encode", "encode (CPU)", "SentenceTransformer.encode"),
    ("speed_predict", "predict, 2 tasks (CPU)", "2 text-classification pipelines"),
    ("speed_gpu", "training (GPU, eager)", "HF Trainer, 1 model per task"),
    ("speed_gpu_compile", "training (GPU, compiled)", "HF Trainer, 1 model per task"),
]


def load(stem: str) -> dict | None:
    path = RESULTS / f"{stem}.json"
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip().startswith("{")]
    return json.loads(lines[-1]) if lines else None


def table(results: dict[str, dict]) -> str:
    rows = [
        "| benchmark | peer | hydrabert /s | peer /s | ratio | target | met | outputs agree |",
        "|---|---|---:|---:|---:|---:|:-:|:-:|",
    ]
    for stem, label, peer in BENCHMARKS:
        result = results.get(stem)
        if result is None:
            continue
        ratio, target = result["ratio"], result["target"]
        rows.append(
            f"| {label} | {peer} | {result['hydrabert_samples_per_s']} | {result['peer_samples_per_s']} "
            f"| **{ratio}** | {target} | {'yes' if ratio >= target else 'no'} | {'yes' if result['ok'] else 'NO'} |"
        )
    machine = next((r["machine"] for r in results.values() if "machine" in r), None)
    if machine:
        rows.append("")
        rows.append(
            f"CPU rows: {machine['cpu']}, {machine['cores']} cores (shared), {machine['torch_threads']} torch "
            f"thread, torch {machine['torch']}; /s = sentences (samples) per second. Extra fields of each run "
            "(CPU-time ratio, padding, per-epoch times, differences between outputs) are in "
            "benchmarks/results/speed_*.json."
        )
    return "\n".join(rows)


def plot(results: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(label, results[stem]) for stem, label, _ in BENCHMARKS if stem in results]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(shown) + 1.4))
    labels = [label for label, _ in shown][::-1]
    ratios = [r["ratio"] for _, r in shown][::-1]
    targets = [r["target"] for _, r in shown][::-1]
    colors = [
        "tab:green" if ratio >= target else "tab:red" for ratio, target in zip(ratios, targets, strict=True)
    ]
    bars = ax.barh(labels, ratios, color=colors)
    for y, target in enumerate(targets):
        ax.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=2)
    for bar, ratio in zip(bars, ratios, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {ratio:.2f}x", va="center")
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("speed ratio, hydrabert / peer (black tick: target)")
    ax.set_xlim(0, max(ratios + targets) * 1.25)
    ax.set_title("hydrabert vs the usual tools (same model and data, one process)")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)


def main():
    results = {stem: result for stem, _, _ in BENCHMARKS if (result := load(stem)) is not None}
    if not results:
        raise SystemExit(f"no benchmarks/results/speed_*.json in {RESULTS}: run the benchmarks first")
    plot(results)
    text = DOC.read_text()
    pattern = re.compile(r"(<!-- results:speed -->\n)(?:.*?\n)?(<!-- /results:speed -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no <!-- results:speed --> block")
    DOC.write_text(pattern.sub(lambda m: m.group(1) + table(results) + "\n" + m.group(2), text, count=1))
    print(f"updated {DOC.relative_to(REPO)} and {PLOT.relative_to(REPO)} from {sorted(results)}")


if __name__ == "__main__":
    main()
