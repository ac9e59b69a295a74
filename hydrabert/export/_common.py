"""What every exporter shares: the error type, optional-dependency imports with an install hint,
and the name of the model an export came from."""

from __future__ import annotations

import importlib


class ExportError(ValueError):
    """An export that cannot reproduce the hydrabert model exactly: the message says why and what
    can be exported instead."""


def require(module: str, purpose: str):
    """Import an optional dependency of the `export` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs {module.split('.')[0]!r}: pip install 'hydrabert[export]'"
        ) from err


def check_hydrabert_model(model) -> None:
    # Duck-typed: a model loaded with trust_remote_code is a HydraBertModel of another module.
    if getattr(getattr(model, "config", None), "model_type", None) != "hydrabert":
        raise TypeError(f"Expected a HydraBertModel, got {type(model).__name__}")


def source_name(model) -> str | None:
    """The checkpoint the model was loaded from (a Hub id or a folder), if known."""
    return getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None) or None


__all__ = ["ExportError", "check_hydrabert_model", "require", "source_name"]
