"""The metric modules for `evaluate` shipped in this folder, so that evaluation runs offline (`evaluate.load` of a
Hub name needs the network). Load them with `load_metric("accuracy")`."""

from __future__ import annotations

import functools
import os

METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def load_metric(name: str, config_name: str | None = None):
    """`evaluate.load` of a metric module shipped in this folder (cached per process)."""
    import evaluate

    path = os.path.join(METRICS_DIR, name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        available = sorted(d for d in os.listdir(METRICS_DIR) if os.path.isdir(os.path.join(METRICS_DIR, d)))
        raise ValueError(
            f"Unknown metric {name!r}; shipped metrics: {[d for d in available if d != '__pycache__']}"
        )
    return evaluate.load(path, config_name) if config_name else evaluate.load(path)


__all__ = ["METRICS_DIR", "load_metric"]
