"""Run an exported hydrabert ONNX graph with ONNX Runtime and the saved tokenizer: the same
`predict()` and `encode()` results as the PyTorch model, without torch weights or remote code."""

from __future__ import annotations

import json
import os

import numpy as np

from ..configuration_hydrabert import length_sorted_batches, readable_predictions
from ._common import require
from .onnx_layout import (
    EMBEDDING_OUTPUT,
    MAX_SEQ_LENGTH_METADATA_KEY,
    ONNX_FILE,
    TASKS_METADATA_KEY,
    logits_output_name,
    session_kwargs,
)

# What OnnxPredictor downloads from a Hub repo: the graphs and the tokenizer, not the torch weights.
_HUB_PATTERNS = [
    "onnx/*",
    "*.onnx",
    "tokenizer*",
    "vocab*",
    "special_tokens_map.json",
    "merges.txt",
    "*.model",
]


def physical_cores() -> int:
    """The machine's physical cores (hyper-threads share one core's arithmetic units: more threads than cores
    do not run faster), from /proc/cpuinfo; the logical count where that is not available."""
    cores = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            package = core = None
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    package = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip() and core is not None:
                    cores.add((package, core))
                    package = core = None
            if core is not None:
                cores.add((package, core))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


class OnnxPredictor:
    """`OnnxPredictor(folder).predict(sentences)` gives what `HydraBertModel.predict(sentences, tokenizer)`
    gives: per sentence, `{task: {"label": name, "score": probability}}`.

    `folder` holds `model.onnx` (or an `onnx/` subfolder does, the Hub layout); the tokenizer is read from
    the folder holding the graph or from its parent. A Hub repo id is downloaded first (graphs and tokenizer
    only). `file_name="model_quantized.onnx"` runs the int8 copy. `threads`: ONNX Runtime's intra-op threads
    (default: the machine's physical cores; set it per process when several share a machine); `session_options`
    (an `onnxruntime.SessionOptions`) sets the rest, and its thread count unless `threads` is given.
    """

    def __init__(
        self,
        path_or_repo_id,
        file_name: str = ONNX_FILE,
        tokenizer=None,
        providers=None,
        session_options=None,
        threads: int | None = None,
        **hub_kwargs,
    ):
        ort = require("onnxruntime", "Running an ONNX model")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if session_options is None:
            session_options = ort.SessionOptions()
            threads = threads or physical_cores()
        if threads is not None:  # explicit: ONNX Runtime's own default varies with its build and version
            session_options.intra_op_num_threads = threads
        folder = str(path_or_repo_id)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(folder, allow_patterns=_HUB_PATTERNS, **hub_kwargs)
        graph_dir = next(
            (d for d in (folder, os.path.join(folder, "onnx")) if os.path.isfile(os.path.join(d, file_name))),
            None,
        )
        if graph_dir is None:
            raise FileNotFoundError(
                f"No {file_name} in {path_or_repo_id} or its onnx/ subfolder; write one with "
                "`python -m hydrabert.export onnx MODEL OUTPUT`"
            )
        self.path = os.path.join(graph_dir, file_name)
        providers = providers or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(
            self.path, sess_options=session_options, providers=providers, **session_kwargs(providers)
        )
        metadata = self.session.get_modelmeta().custom_metadata_map
        if TASKS_METADATA_KEY not in metadata:
            raise ValueError(
                f"{self.path} is not a hydrabert export: its metadata lacks {TASKS_METADATA_KEY!r}"
            )
        self.tasks: dict[str, dict] = json.loads(metadata[TASKS_METADATA_KEY])
        # The length the model was trained at (graphs exported before it was recorded: the tokenizer's limit).
        self.max_seq_length = (
            int(metadata[MAX_SEQ_LENGTH_METADATA_KEY]) if MAX_SEQ_LENGTH_METADATA_KEY in metadata else None
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(graph_dir, path_or_repo_id)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def predict(
        self,
        sentences: list[str] | str,
        tasks: list[str] | str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
    ):
        """As `HydraBertModel.predict`: per sentence, `{task: {"label", "score"}}`; inputs truncated at the
        length the model was trained at unless `max_length` is given."""
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        tasks = [tasks] if isinstance(tasks, str) else (self.task_names if tasks is None else list(tasks))
        for name in tasks:
            if name not in self.tasks:
                raise ValueError(f"Unknown task {name!r}; known tasks: {self.task_names}")
        wanted = [logits_output_name(name) for name in tasks]
        results: list[dict | None] = [None] * len(sentences)
        for indices, outputs in self._batches(sentences, wanted, batch_size, max_length, show_progress_bar):
            per_task = {
                name: readable_predictions(self.tasks[name], logits)
                for name, logits in zip(tasks, outputs, strict=True)
            }
            for row, index in enumerate(indices):
                results[index] = {name: per_task[name][row] for name in tasks}
        return results[0] if single else results

    def encode(
        self,
        sentences: list[str] | str,
        batch_size: int = 32,
        normalize: bool = False,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
    ):
        """Sentence embeddings `(n, embedding_dim)` as a numpy array, in input order."""
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        output = None
        batches = self._batches(sentences, [EMBEDDING_OUTPUT], batch_size, max_length, show_progress_bar)
        for indices, (embeddings,) in batches:
            if normalize:
                embeddings = embeddings / np.maximum(
                    np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12
                )
            if output is None:
                output = np.empty((len(sentences), embeddings.shape[-1]), dtype=embeddings.dtype)
            output[indices] = embeddings
        return output[0] if single else output

    def _batches(self, sentences, output_names, batch_size, max_length, show_progress_bar=None):
        if max_length is None:  # the length the model was trained at (None: the tokenizer's own limit)
            max_length = self.max_seq_length
        for indices, encoded in length_sorted_batches(
            sentences, self.tokenizer, batch_size, max_length, "np", show_progress_bar
        ):
            feed = {name: encoded[name].astype(np.int64) for name in self.input_names}
            yield indices, self.session.run(output_names, feed)


def _load_tokenizer(graph_dir: str, source):
    from transformers import AutoTokenizer

    for folder in (graph_dir, os.path.dirname(graph_dir.rstrip(os.sep))):
        if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(folder)
    raise FileNotFoundError(
        f"No tokenizer beside {graph_dir} (or in its parent) for {source}; pass tokenizer=..."
    )


__all__ = ["OnnxPredictor"]
