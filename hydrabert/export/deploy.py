"""Every export of a trained model at once, in the layout run_mtl.py and `python -m hydrabert.export all`
write, and its push to the Hub.

Layout: one folder per Hub repo, so each standard model gets its own card, widget, pipeline tag and
serving support (Inference Endpoints, text-embeddings-inference need the model at a repo's root):

    <model>/                          the hydrabert model (trust_remote_code), repo <id>
    <model>/onnx/model.onnx           the whole model, one graph, in the same repo: onnx/ is where optimum,
    <model>/onnx/model_quantized.onnx   transformers.js and sentence-transformers look for ONNX files
    <model>-<task>/                   each task as a standard classifier, repo <id>-<task>
    <model>-sentence-transformer/     the sentence encoder, repo <id>-sentence-transformer
"""

from __future__ import annotations

import logging
import os

from ._common import ExportError
from .onnx_graph import export_onnx
from .sentence_transformer import export_sentence_transformer
from .task_classifier import build_task_classifier, check_exactly_expressible, export_task

logger = logging.getLogger(__name__)

EXPORT_KINDS = ("task", "sentence_transformer", "onnx")


def parse_export_kinds(value: str) -> list[str]:
    """`"all"` or a comma-separated subset of EXPORT_KINDS."""
    kinds = [part.strip() for part in value.split(",") if part.strip()]
    if kinds == ["all"]:
        return ["all"]
    unknown = sorted(set(kinds) - set(EXPORT_KINDS))
    if not kinds or unknown:
        raise ValueError(
            f"export: expected 'all' or a comma-separated subset of {EXPORT_KINDS}, got {value!r}"
        )
    return kinds


def plan_exports(model, value: str) -> list[str]:
    """The exports to write. Kinds asked for by name must be exact for this model (else ExportError, early,
    before any training); `all` drops those that are not, with a warning that says why."""
    kinds = parse_export_kinds(value)
    explicit = kinds != ["all"]
    plan = []
    for kind in EXPORT_KINDS if not explicit else kinds:
        reason = _why_not_exact(model, kind)
        if reason is None:
            plan.append(kind)
        elif explicit:
            raise ExportError(reason)
        else:
            logger.warning("Skipping the %s export: %s", kind, reason)
    return plan


def export_folders(model_dir, task_names) -> dict[str, str]:
    """Where each export goes, as `{kind: folder}` with one `task:<name>` entry per task."""
    base = os.path.normpath(os.path.abspath(model_dir))
    folders = {"onnx": os.path.join(base, "onnx"), "sentence_transformer": f"{base}-sentence-transformer"}
    folders.update({f"task:{name}": f"{base}-{name}" for name in task_names})
    return folders


def hub_repos(hub_model_id: str, task_names) -> dict[str, str]:
    """The Hub repo of each export, named like its folder (ONNX shares the model's repo)."""
    repos = {"onnx": hub_model_id, "sentence_transformer": f"{hub_model_id}-sentence-transformer"}
    repos.update({f"task:{name}": f"{hub_model_id}-{name}" for name in task_names})
    return repos


def write_exports(model, tokenizer, model_dir, plan, hub_model_id: str | None = None) -> dict[str, str]:
    """Write the planned exports next to `model_dir`; returns `{kind: folder}`. With `hub_model_id`, the
    cards name the repos the exports will be pushed to."""
    folders = export_folders(model_dir, model.config.head_task_names)
    repos = hub_repos(hub_model_id, model.config.head_task_names) if hub_model_id else {}
    source = hub_model_id or os.path.normpath(os.path.abspath(model_dir))
    written = {}
    if "onnx" in plan:
        # Checked on real sentences through the model's tokenizer (not random ids); the tokenizer stays
        # one folder up, where the graph finds it.
        result = export_onnx(model, folders["onnx"], tokenizer=tokenizer, quantize=True, save_tokenizer=False)
        logger.info(
            "ONNX export %s: max abs difference to PyTorch %.2e on real sentences, fused nodes %s",
            result.path,
            result.max_abs_diff,
            result.fused_nodes,
        )
        written["onnx"] = folders["onnx"]
    if "sentence_transformer" in plan:
        folder = folders["sentence_transformer"]
        export_sentence_transformer(
            model, folder, tokenizer=tokenizer, source=source, model_id=repos.get("sentence_transformer")
        )
        written["sentence_transformer"] = folder
    if "task" in plan:
        for name in model.config.head_task_names:
            key = f"task:{name}"
            export_task(
                model, name, folders[key], tokenizer=tokenizer, source=source, model_id=repos.get(key)
            )
            written[key] = folders[key]
    for kind, folder in written.items():
        logger.info("Exported %s to %s", kind, folder)
    return written


def push_exports(written: dict[str, str], hub_model_id: str, token=None, private: bool | None = None) -> dict:
    """Push each standard model to its own repo (ONNX already went up with the model's own commit, from
    `<model>/onnx/`). Returns `{kind: commit}`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repos = hub_repos(hub_model_id, [key.split(":", 1)[1] for key in written if key.startswith("task:")])
    commits = {}
    for kind, folder in written.items():
        if kind == "onnx":
            continue
        repo_id = repos[kind]
        api.create_repo(repo_id, private=private, exist_ok=True)
        commits[kind] = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=f"Export of {hub_model_id} ({kind}) by hydrabert",
        )
        logger.info("Pushed the %s export to %s", kind, repo_id)
    return commits


def _why_not_exact(model, kind: str) -> str | None:
    if kind == "task":
        try:
            check_exactly_expressible(model.config)
            if model.config.head_task_names:
                # The family's classifier is proven only by building one and comparing logits.
                build_task_classifier(model, model.config.head_task_names[0])
        except ExportError as err:
            return str(err)
    if kind == "sentence_transformer" and model.config.adapter_size:
        return (
            f"adapter_size={model.config.adapter_size}: the adapter's residual bottleneck has no "
            "sentence-transformers module; the onnx export holds the whole model"
        )
    return None


__all__ = [
    "EXPORT_KINDS",
    "export_folders",
    "hub_repos",
    "parse_export_kinds",
    "plan_exports",
    "push_exports",
    "write_exports",
]
