"""Frozen-encoder feature caching: a frozen encoder's work is done once per example, not once per epoch.

When the encoder is frozen for the whole run (`freeze_policy="encoder"`, or `freeze_embeddings` with
`freeze_lower_layers` = every layer), training only moves what sits above it: the projection, the
adapter and the heads. The encoder then runs in eval mode (no dropout), so its output for an example
never changes, and `FrozenEncoder` computes it once: the first time an example is seen, its encoder
features (`HydraBertModel.get_encoder_features`: h_[CLS] for CLS pooling, the masked mean for mean
pooling, exactly what the projection reads) are stored; every later epoch, and evaluation during
training, reads them back and runs only the layers above the encoder.

In one process the cache is filled before the first step (`FrozenEncoder.fill`): every distinct
training (and, when training evaluates, validation) example, sorted by length so that batches hardly
pad, in batches of `per_device_eval_batch_size`, without autograd. The fill then costs less than an
epoch that runs the encoder (0.94 of one, validation rows included, in benchmarks/bench_frozen.py),
which is what brings 5 epochs to about a fifth of the cost of 5 recomputed ones. Under DDP each rank fills its cache lazily from the
batches it is given instead: filling the whole data set on every rank would cost each rank more
than its share.

Keys are the example's tokens (input ids, attention mask and token types up to its last attended
token), not dataset positions: a key cannot go stale or alias another example when datasets are
shuffled, sharded, filtered or swapped, and no collator has to carry an id. Under DDP each rank
caches what it sees. Memory: one `hidden_size` vector per distinct example, on the encoder's device,
in the dtype the encoder produced (MiniLM fp32: 1.5 KB; BERT-base: 3 KB), freed when training ends.

Results are those of recomputing the encoder each epoch: the same features reach the same layers in
the same order, with the same random draws (a frozen encoder in eval mode draws none). The one
difference is floating-point: a recomputed batch pads to another length, which can move an
encoder output in its last bit; the cache returns the value of the example's first pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .data.collation import MODEL_INPUTS
from .data.multitask_dataset import build_multitask_dataset

logger = logging.getLogger(__name__)

# Inputs a cached step understands; anything else (position_ids, inputs_embeds, output_* flags...)
# goes through the normal forward.
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OTHER_INPUTS = ("labels", "task", "task_ids")


class FeatureCache:
    """Encoder features keyed by tokens: rows of one growing `(capacity, hidden)` tensor."""

    def __init__(self):
        self._index: dict[bytes, int] = {}
        self._store: torch.Tensor | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return 0 if self._store is None else self._size * self._store[0].nbytes

    def clear(self) -> None:
        self._index, self._store, self._size = {}, None, 0

    @staticmethod
    def keys(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[bytes]:
        """One key per row: its tokens, mask and token types up to the last attended position. The
        padding after it changes nothing the encoder returns, so the same example padded in another
        batch gets the same key."""
        ids = input_ids.detach().cpu().numpy().astype(np.int64, copy=False)
        if attention_mask is None:
            mask = np.ones_like(ids)
            lengths = np.full(len(ids), ids.shape[1])
        else:
            mask = attention_mask.detach().cpu().numpy().astype(np.int64, copy=False)
            lengths = mask.shape[1] - np.argmax(mask[:, ::-1] != 0, axis=1)
        types = None if token_type_ids is None else token_type_ids.detach().cpu().numpy().astype(np.int64)
        keys = []
        for row, length in enumerate(lengths.tolist()):
            key = ids[row, :length].tobytes() + mask[row, :length].tobytes()
            if types is not None:
                key += types[row, :length].tobytes()
            keys.append(key)
        return keys

    def lookup(self, keys: list[bytes]) -> list[int | None]:
        return [self._index.get(key) for key in keys]

    def to_encode(self, keys: list[bytes]) -> list[int]:
        """Positions whose key is not cached, once per key (a batch can hold an example twice)."""
        seen: set[bytes] = set()
        positions = []
        for position, key in enumerate(keys):
            if key not in self._index and key not in seen:
                seen.add(key)
                positions.append(position)
        return positions

    def add(self, keys: list[bytes], features: torch.Tensor) -> list[int]:
        """Stores `features[i]` under `keys[i]` (a key seen before keeps its first value); returns rows."""
        rows, fresh = [], []
        for position, key in enumerate(keys):
            row = self._index.get(key)
            if row is None:
                row = self._index[key] = self._size + len(fresh)
                fresh.append(position)
            rows.append(row)
        if fresh:
            features = features.detach()
            self._reserve(self._size + len(fresh), features)
            self._store[self._size : self._size + len(fresh)] = features[fresh].to(self._store.dtype)
            self._size += len(fresh)
        return rows

    def gather(self, rows: list[int]) -> torch.Tensor:
        return self._store[torch.tensor(rows, device=self._store.device)]

    def _reserve(self, needed: int, like: torch.Tensor) -> None:
        capacity = 0 if self._store is None else self._store.shape[0]
        if needed <= capacity:
            return
        # Doubling: an epoch of appends costs O(n) copies in total.
        store = like.new_empty((max(needed, 2 * capacity, 1024), *like.shape[1:]))
        if self._store is not None:
            store[: self._size] = self._store[: self._size]
        self._store = store


def encoder_is_frozen(model, never_trained: set[str]) -> bool:
    """Whether no encoder parameter ever trains (a model without an encoder has none to cache)."""
    names = [f"encoder.{name}" for name, _ in model.encoder.named_parameters()]
    return bool(names) and all(name in never_trained for name in names)


class FrozenEncoder(TrainerCallback):
    """The trainer's forward for a model whose encoder never trains: the encoder in eval mode (no
    dropout, so its outputs are deterministic) and, with `cache=True`, each example's encoder features
    computed once during `train()` (training and the evaluations it runs) and reused after that.

    `MultiTaskTrainer` builds one with `from_trainer` and routes `compute_loss` through `__call__` (the forward is
    the trainer's: no callback event sees a batch before it). Without this callback in the trainer's list
    (`trainer.remove_callback(FrozenEncoder)`) the forward still runs the encoder in eval mode, uncached: the same
    results, at the cost of an encoder pass per step.
    """

    def __init__(
        self,
        unwrap: Callable[[torch.nn.Module], torch.nn.Module],
        autocast: Callable[[], AbstractContextManager],
        cache: bool = True,
        prefill: Callable[[], Iterable[dict]] | None = None,
    ):
        self._unwrap = unwrap
        self.last_features = None  # the cached features of the last batch (read by the embedding teacher)
        # The encoder pass of a miss runs outside the wrapped forward, where accelerate applies
        # mixed precision: the same autocast must be entered by hand, or the features' dtype differs.
        self._autocast = autocast
        self.cache_enabled = cache
        # Batches of token inputs (on CPU) covering what training will see; None: fill lazily.
        self.prefill = prefill
        self.cache = FeatureCache()
        self.active = False  # only between on_train_begin and on_train_end
        self.hits = 0  # rows a forward took from the cache
        self.misses = 0  # rows the encoder ran on (filling or lazily)

    @classmethod
    def from_trainer(cls, trainer) -> FrozenEncoder | None:
        """One for `trainer` (a `MultiTaskTrainer`) when its model's encoder is frozen for the whole run, else None.
        In one process it computes every example training will encode up front (train rows, and validation rows
        when training evaluates), length-sorted; under DDP lazily, as each rank meets them."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        freezing = trainer.freezing  # what never trains, and any unfreezing schedule
        if freezing.unfreezing is not None or not encoder_is_frozen(model, freezing.never_trained):
            return None

        streamed = getattr(trainer.train_dataset, "streams", None)

        def training_examples() -> Iterator[dict]:
            sources = [trainer.train_dataset]
            if trainer.eval_datasets and trainer.args.eval_strategy != "no":
                sources += [
                    build_multitask_dataset({task: dataset}, task_names=model.task_names)[0]
                    for task, dataset in trainer.eval_datasets.items()
                ]
            return length_sorted_batches(sources, trainer.data_collator, trainer.args.eval_batch_size)

        return cls(
            unwrap=trainer.accelerator.unwrap_model,
            autocast=trainer.accelerator.autocast,
            cache=getattr(trainer.args, "cache_frozen_encoder", True),
            # Streamed tasks are not read up front either: their rows are encoded as training meets them.
            prefill=training_examples if trainer.args.world_size == 1 and streamed is None else None,
        )

    # ------------------------------------------------------------------------------- callback
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # A fresh cache per run: the encoder may have been swapped or edited between runs.
        self.cache.clear()
        self.hits = self.misses = 0
        self.active = self.cache_enabled
        if self.active and self.prefill is not None and model is not None:
            self.fill(model, self.prefill(), progress=not args.disable_tqdm)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.active:
            logger.info(
                "frozen-encoder cache: %d examples (%.1f MB), %d hits, %d encoder passes",
                len(self.cache),
                self.cache.nbytes / 2**20,
                self.hits,
                self.misses,
            )
        self.active = False
        self.cache.clear()
        if model is not None:  # leave the encoder in the mode of the rest of the model
            self._unwrap(model).encoder.train(model.training)

    def fill(self, model, batches: Iterable[dict], progress: bool = False) -> None:
        """Encodes every example of `batches` (token inputs, on any device) that is not cached yet."""
        unwrapped = self._unwrap(model)
        encoder_was_training = unwrapped.encoder.training
        unwrapped.encoder.eval()
        device = next(unwrapped.encoder.parameters()).device
        for batch in tqdm(batches, desc="Caching frozen-encoder outputs", unit="batch", disable=not progress):
            token_inputs = {
                name: batch[name].to(device) for name in _TOKEN_INPUTS if batch.get(name) is not None
            }
            self._encode_new(unwrapped, token_inputs)
        unwrapped.encoder.train(encoder_was_training)
        logger.info("frozen-encoder cache filled: %d examples", len(self.cache))

    def _encode_new(self, unwrapped, token_inputs: dict) -> list[bytes]:
        """Runs the encoder on the rows whose key is not cached yet, stores them; returns all rows' keys."""
        keys = self.cache.keys(**token_inputs)
        missing = self.cache.to_encode(keys)
        if missing:
            if len(missing) < len(keys):  # a partly cached batch: encode the new rows only
                select = torch.tensor(missing, device=token_inputs["input_ids"].device)
                token_inputs = {name: value[select] for name, value in token_inputs.items()}
            # no_grad, not inference_mode: the stored rows later feed layers that record autograd.
            with torch.no_grad(), self._autocast():
                features = unwrapped.get_encoder_features(**token_inputs)
            self.cache.add([keys[p] for p in missing], features)
            self.misses += len(missing)
        return keys

    # -------------------------------------------------------------------------------- forward
    def __call__(self, model, inputs: dict):
        unwrapped = self._unwrap(model)
        if model.training:
            # Trainer.training_step has just called model.train().
            unwrapped.encoder.eval()
        self.last_features = None
        if not self.active or not _cacheable(inputs):
            return model(**inputs)
        token_inputs = {name: inputs[name] for name in _TOKEN_INPUTS if inputs.get(name) is not None}
        misses_before = self.misses
        keys = self._encode_new(unwrapped, token_inputs)
        self.hits += len(keys) - (self.misses - misses_before)
        others = {name: value for name, value in inputs.items() if name not in _TOKEN_INPUTS}
        # Kept for the embedding-preservation teacher, which re-projects the same features.
        self.last_features = self.cache.gather(self.cache.lookup(keys))
        return model(**others, encoder_features=self.last_features)


def length_sorted_batches(
    sources: list, collate: Callable[[list[dict]], dict], batch_size: int
) -> Iterator[dict]:
    """Every row of `sources` (`MultiTaskDataset`s), longest first, collated in batches of `batch_size`, token inputs
    only (the cache needs no labels, and rows of a shared source carry theirs by task): sorted rows hardly pad, and
    the longest batch comes first, so one that does not fit in memory fails at once. `FrozenEncoder.fill` reads
    them."""
    rows = []  # (token length, source, global index in the source)
    for number, source in enumerate(sources):
        lengths = [n for task_lengths in source.task_lengths().values() for n in task_lengths]
        rows += [(length, number, index) for index, length in enumerate(lengths)]
    rows.sort(key=lambda row: -row[0])
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        features = []
        for number, source in enumerate(sources):  # one batched Arrow read per source
            indices = [index for _, source_number, index in batch if source_number == number]
            if indices:
                features += source.__getitems__(indices)
        yield collate([{k: row[k] for k in MODEL_INPUTS if k in row} for row in features])


def _cacheable(inputs: dict) -> bool:
    return (
        isinstance(inputs.get("input_ids"), torch.Tensor)
        and inputs["input_ids"].dim() == 2
        and all(name in _TOKEN_INPUTS or name in _OTHER_INPUTS for name in inputs)
    )


__all__ = ["FeatureCache", "FrozenEncoder", "encoder_is_frozen", "length_sorted_batches"]
