"""HydraBERT serving in the travelling code: the model's inference API (`encode`, `predict`, the `export_*`
entry points) and the `transformers.pipeline` that gives every task's label and score from one encoder pass.

This file travels to the Hub next to the weights (`config.json` names it under `custom_pipelines`, and the model
file imports it), so `transformers.pipeline(model=repo_or_dir, trust_remote_code=True)` builds the pipeline and
`model.encode(...)` runs on a machine that never installed hydrabert. It imports only torch, transformers, the
standard library and the configuration file that travels with it, which owns the serving contract: batching
(`length_sorted_batches`) and post-processing (`readable_predictions`, turning logits into labels and scores
exactly as `OnnxPredictor` does). The pipeline relies on nothing but the model's config (`config.tasks`,
`config.max_seq_length`) and its forward returning a dict of per-task logits.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F
from transformers import Pipeline

from .configuration_hydrabert import length_sorted_batches, readable_predictions

# Model outputs travel through the pipeline's batching machinery as a flat dict of tensors (a nested
# dict would not be split back into rows); the prefix keeps task names clear of the keys the machinery
# treats specially ("hidden_states", "attentions", "cache").
_LOGITS_PREFIX = "logits."

PIPELINE_TASK = "hydrabert-multitask"
# What the model's forward takes from a tokenizer's output.
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class HydraBertInferenceMixin:
    """`HydraBertModel`'s inference and export API, kept beside the pipeline so that the model class holds the
    network and its loss only. It needs of the model: `config` (`tasks`, `head_task_names`, `max_seq_length`,
    `embedding_dim`), `device`, `dtype`, `_check_task`, and a forward returning `sentence_embedding` and a dict of `logits`."""

    @torch.inference_mode()
    def encode(
        self,
        sentences: list[str] | str,
        tokenizer,
        batch_size: int = 32,
        normalize: bool = False,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = False,
        dtype: torch.dtype | None = None,
    ):
        """Sentence embeddings `(n, embedding_dim)` in input order. Batches are sorted by length so
        little compute goes to padding; gradients are off; a progress bar shows on long inputs.

        `dtype=torch.bfloat16` computes under autocast (fp32 weights kept; on a CPU with AMX or AVX512-BF16 about
        twice as fast, see docs/results.md); the embeddings come back as float32 either way."""
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        output = None
        for indices, outputs in self._batched_forward(
            sentences, tokenizer, batch_size, max_length, show_progress_bar, dtype
        ):
            embeddings = outputs.sentence_embedding.float()
            if normalize:
                # Row by row, so batch by batch: normalising the whole result would hold a second copy of it.
                embeddings = F.normalize(embeddings.float(), p=2, dim=-1)
            if output is None:
                output = torch.empty(len(sentences), embeddings.shape[-1])
            output[indices] = embeddings.to("cpu")
        if output is None:
            output = torch.empty(0, self.config.embedding_dim)
        if single:
            output = output[0]
        return output.numpy() if convert_to_numpy else output

    @torch.inference_mode()
    def predict(
        self,
        sentences: list[str] | str,
        tokenizer,
        tasks: list[str] | str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[dict[str, dict]]:
        """Per sentence, `{task: {"label": name, "score": probability}}` for every task with a head (or the given
        ones; a sentence-similarity task has none).

        Multi-label tasks give the labels whose probability exceeds 0.5 (`"label"` is a list, `"score"`
        their probabilities); regression tasks give `"score"` only. `dtype=torch.bfloat16`: as in `encode`
        (scores are computed from the logits in float32).
        """
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        heads = self.config.head_task_names
        tasks = [tasks] if isinstance(tasks, str) else (heads if tasks is None else list(tasks))
        for name in tasks:
            self._check_task(name)
            if name not in heads:
                raise ValueError(
                    f"Task {name!r} is a {self.config.tasks[name]['problem_type']} task: it has no head to predict "
                    "with; compare sentences by their embeddings (encode())"
                )
        results: list[dict | None] = [None] * len(sentences)
        for indices, outputs in self._batched_forward(
            sentences, tokenizer, batch_size, max_length, show_progress_bar, dtype
        ):
            per_task = {
                name: readable_predictions(
                    self.config.tasks[name], outputs.logits[name].float().cpu().numpy()
                )
                for name in tasks
            }
            for row, index in enumerate(indices.tolist()):
                results[index] = {name: per_task[name][row] for name in tasks}
        return results[0] if single else results

    def _batched_forward(self, sentences, tokenizer, batch_size, max_length, show_progress_bar, dtype=None):
        """Yields (original indices, outputs) for length-sorted batches, in eval mode (under autocast to
        `dtype` when it is not the weights' own)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(
                f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16), got {dtype!r}"
            )
        autocast = (
            torch.autocast(self.device.type, dtype=dtype)
            if dtype is not None and dtype != self.dtype
            else contextlib.nullcontext()
        )
        if max_length is None:  # the length the model was trained at (None: the tokenizer's own limit)
            max_length = self.config.max_seq_length
        was_training = self.training
        self.eval()
        try:
            device = self.device
            for indices, batch in length_sorted_batches(
                sentences, tokenizer, batch_size, max_length, "pt", show_progress_bar
            ):
                batch = {k: v.to(device) for k, v in batch.items() if k in _TOKEN_INPUTS}
                with autocast:
                    outputs = self(**batch)
                yield torch.tensor(indices), outputs
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------ export
    # Deployable copies that need no remote code. The work is done by hydrabert.export (pip install
    # 'hydrabert[export]'); this file imports nothing beyond torch and transformers, so the code comes to
    # the class instead: `import hydrabert` sets this hook, which loads hydrabert.export on first use.
    _load_exporter = None

    def export_task(self, task: str, save_directory, tokenizer=None, **kwargs):
        """`task` as the encoder family's own `*ForSequenceClassification` (same logits), loadable by
        `AutoModelForSequenceClassification` and `pipeline("text-classification")` without remote code."""
        return self._exporter().export_task(self, task, save_directory, tokenizer=tokenizer, **kwargs)

    def export_sentence_transformer(self, save_directory, tokenizer=None, normalize: bool = False, **kwargs):
        """The sentence encoder as a sentence-transformers model (same embeddings as `encode`)."""
        return self._exporter().export_sentence_transformer(
            self, save_directory, tokenizer=tokenizer, normalize=normalize, **kwargs
        )

    def export_onnx(self, save_directory, tokenizer=None, quantize: bool = False, **kwargs):
        """The whole model as one ONNX graph (every task's logits and the embedding), validated with ONNX
        Runtime; `hydrabert.export.OnnxPredictor(save_directory).predict(...)` runs it."""
        return self._exporter().export_onnx(
            self, save_directory, tokenizer=tokenizer, quantize=quantize, **kwargs
        )

    def _exporter(self):
        if self._load_exporter is None:
            raise ImportError(
                "Exporting needs the hydrabert package with its export extra: pip install 'hydrabert[export]'. "
                "For a model loaded with trust_remote_code, call hydrabert.export.export_task(model, ...) "
                "(export_sentence_transformer, export_onnx) on it."
            )
        return self._load_exporter()


class HydraBertPipeline(Pipeline):
    r"""
    Multi-task text classification with a HydraBERT model.

    Returns, per sentence, `{task: {"label": name, "score": probability}}` for every task (the same as
    `HydraBertModel.predict`). Multi-label tasks give the labels whose probability exceeds 0.5 (`"label"`
    and `"score"` are lists); regression tasks give `{"score": value}`.

    Call arguments:
        tasks (`str` or `list[str]`, *optional*): only these tasks (default: all).
        top_k (`int`, *optional*): for classification tasks, the `top_k` most probable labels as a list of
            `{"label", "score"}` dicts, best first, instead of the single prediction.
        max_length (`int`, *optional*): truncate longer inputs (default: the length the model was trained at,
            `config.max_seq_length`, or the tokenizer's maximum for a model saved without it).

    Example:

    ```python
    >>> from transformers import pipeline
    >>> classifier = pipeline(model="user/hydrabert-sst2-trec", trust_remote_code=True)
    >>> classifier("a gripping, beautifully made film")
    {'sentiment': {'label': 'positive', 'score': 0.98}, 'topic': {'label': 'DESC', 'score': 0.41}}
    >>> classifier(["what is the capital of peru?"], tasks="topic", top_k=2)
    [{'topic': [{'label': 'LOC', 'score': 0.93}, {'label': 'DESC', 'score': 0.03}]}]
    ```
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tasks = getattr(self.model.config, "tasks", None)
        if not isinstance(tasks, dict) or not tasks:
            raise ValueError(
                f"{type(self).__name__} needs a multi-task model whose config has `tasks`; "
                f"got {type(self.model).__name__}"
            )
        _names_for_custom_pipelines(self.model.config)

    def _sanitize_parameters(self, tasks=None, top_k=None, max_length=None, truncation=None, **kwargs):
        preprocess_params, postprocess_params = {}, {}
        if max_length is not None:
            preprocess_params["max_length"] = max_length
        if truncation is not None:
            preprocess_params["truncation"] = truncation
        if tasks is not None:
            tasks = [tasks] if isinstance(tasks, str) else list(tasks)
            known = list(self.model.config.tasks)
            unknown = [name for name in tasks if name not in known]
            if unknown:
                raise ValueError(f"Unknown task(s) {unknown}; known tasks: {known}")
            postprocess_params["tasks"] = tasks
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
            postprocess_params["top_k"] = top_k
        if kwargs:
            raise TypeError(f"Unexpected argument(s) {sorted(kwargs)}; expected tasks, top_k, max_length")
        return preprocess_params, {}, postprocess_params

    def preprocess(self, inputs, truncation=True, max_length=None):
        if not isinstance(inputs, str):
            raise TypeError(f"{type(self).__name__} takes a string or a list of strings, got {type(inputs)}")
        if max_length is None:
            max_length = getattr(self.model.config, "max_seq_length", None)
        encoded = self.tokenizer(inputs, truncation=truncation, max_length=max_length, return_tensors="pt")
        return {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _forward(self, model_inputs):
        # No `task`: the model returns every task's logits from one encoder pass.
        logits = self.model(**model_inputs).logits
        return {_LOGITS_PREFIX + name: value for name, value in logits.items()}

    def postprocess(self, model_outputs, tasks=None, top_k=None):
        specs = self.model.config.tasks
        # Every task with a head (a sentence-similarity task has none: it is the embedding itself).
        tasks = [name for name in specs if _LOGITS_PREFIX + name in model_outputs] if tasks is None else tasks
        headless = [name for name in tasks if _LOGITS_PREFIX + name not in model_outputs]
        if headless:
            raise ValueError(
                f"Task(s) {headless} have no head to predict with (sentence similarity: use the embedding)"
            )
        return {
            name: readable_predictions(
                specs[name], model_outputs[_LOGITS_PREFIX + name].float().cpu().numpy(), top_k
            )[0]
            for name in tasks
        }


def custom_pipelines_entry() -> dict:
    """What config.json holds under `custom_pipelines` (what `Pipeline.save_pretrained` writes for a
    registered pipeline): with this one entry, `pipeline(model=folder_or_repo, trust_remote_code=True)`
    infers the task. A new dict each call: `pipeline()` replaces the class names in it by classes, in place."""
    return {
        PIPELINE_TASK: {
            "impl": f"{__name__.rpartition('.')[2]}.{HydraBertPipeline.__name__}",
            "pt": ["AutoModel"],
            "type": "text",
        }
    }


def _names_for_custom_pipelines(config) -> None:
    """`transformers.pipeline()` replaces the class names in `config.custom_pipelines[...]["pt"]` by the
    classes themselves, in place; put the names back so that the model can still be saved (JSON)."""
    for info in (getattr(config, "custom_pipelines", None) or {}).values():
        if isinstance(info, dict) and "pt" in info:
            classes = info["pt"] if isinstance(info["pt"], (list, tuple)) else [info["pt"]]
            info["pt"] = [c if isinstance(c, str) else c.__name__ for c in classes]


__all__ = ["PIPELINE_TASK", "HydraBertInferenceMixin", "HydraBertPipeline", "custom_pipelines_entry"]
