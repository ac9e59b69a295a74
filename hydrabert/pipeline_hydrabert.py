"""HydraBERT inference pipeline: every task's label and score for each sentence, from one encoder pass.

This file travels to the Hub next to the weights (`config.json` names it under `custom_pipelines`), so
`transformers.pipeline(model=repo_or_dir, trust_remote_code=True)` builds it on a machine that never
installed hydrabert. It imports only torch, transformers, the standard library and the configuration file
that travels with it (whose `readable_predictions` turns logits into labels and scores exactly as
`HydraBertModel.predict` and `OnnxPredictor` do), and relies on nothing but the model's config (`config.tasks`,
`config.max_seq_length`) and its forward returning a dict of per-task logits.
"""

from __future__ import annotations

from transformers import Pipeline

from .configuration_hydrabert import readable_predictions

# Model outputs travel through the pipeline's batching machinery as a flat dict of tensors (a nested
# dict would not be split back into rows); the prefix keeps task names clear of the keys the machinery
# treats specially ("hidden_states", "attentions", "cache").
_LOGITS_PREFIX = "logits."

PIPELINE_TASK = "hydrabert-multitask"


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


__all__ = ["PIPELINE_TASK", "HydraBertPipeline", "custom_pipelines_entry"]
