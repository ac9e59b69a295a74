"""Tokenising a task's splits once, unpadded (the collator pads per batch), and the token length
of each row, for length grouping."""

from __future__ import annotations

import os

import datasets
import pyarrow.compute as pc
from datasets.fingerprint import Hasher

from .collation import PAIR_PREFIX

# Bump when the tokenised columns change, so stale caches are not reused.
_TOKENIZE_CACHE_VERSION = "hydrabert-tokenize-2"


def _tokenize_batch(batch, tokenizer, max_length, keys, separate_pairs):
    pairs = batch.get("text_pair")
    if separate_pairs:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        second = tokenizer(pairs, truncation=True, max_length=max_length)
        out = {key: encoded[key] for key in keys} | {PAIR_PREFIX + key: second[key] for key in keys}
        # Both sentences are padded to the batch's longest: group by the longer one.
        lengths = zip(encoded["input_ids"], second["input_ids"], strict=True)
        out["length"] = [max(len(a), len(b)) for a, b in lengths]
    else:
        encoded = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
        out = {key: encoded[key] for key in keys}
        out["length"] = [len(ids) for ids in encoded["input_ids"]]
    out["labels"] = batch["label"]
    return out


def tokenizer_keys(tokenizer) -> list[str]:
    """The model inputs this tokenizer makes (not every family makes token_type_ids)."""
    probe = tokenizer("probe")
    return [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in probe]


def tokenize_task(
    splits: datasets.DatasetDict,
    tokenizer,
    max_length: int | None = None,
    cache_dir: str | None = None,
    batch_size: int = 1000,
    separate_pairs: bool = False,
) -> datasets.DatasetDict:
    """Tokenise every split once, without padding (the collator pads per batch).

    Columns: `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer makes them),
    `labels` and `length` (tokens per example, for length grouping). With `cache_dir`, the
    result is stored there under a fingerprint of (data, tokenizer, max_length) and reused.

    A `text_pair` is tokenised with its text as one input (a cross-encoder's pair), unless
    `separate_pairs` (a sentence-similarity task, which embeds each sentence alone): then the second
    sentence gets columns of its own, `pair_input_ids`, `pair_attention_mask`, ..., and `length` is the
    longer of the two.
    """
    max_length = max_length or tokenizer.model_max_length
    keys = tokenizer_keys(tokenizer)
    out = datasets.DatasetDict()
    for split, dataset in splits.items():
        separate = separate_pairs and "text_pair" in dataset.column_names
        columns = keys + [PAIR_PREFIX + key for key in keys] if separate else keys
        features = datasets.Features({key: datasets.List(datasets.Value("int32")) for key in columns})
        features["labels"] = dataset.features["label"]
        features["length"] = datasets.Value("int32")
        # The source's content fingerprint (datasets hashes in-memory tables) makes the key
        # deterministic across runs, so every process of a launch finds the same cache file.
        fingerprint = Hasher.hash(
            [_TOKENIZE_CACHE_VERSION, dataset._fingerprint, tokenizer, max_length, separate]
        )
        cache_file_name = None
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            cache_file_name = os.path.join(cache_dir, f"tokenized-{fingerprint}.arrow")
        out[split] = dataset.map(
            _tokenize_batch,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={
                "tokenizer": tokenizer,
                "max_length": max_length,
                "keys": keys,
                "separate_pairs": separate,
            },
            remove_columns=dataset.column_names,
            features=features,
            new_fingerprint=fingerprint,
            cache_file_name=cache_file_name,
            desc=f"Tokenizing {split}",
        )
    return out


def token_lengths(dataset) -> list[int]:
    """Tokens per row: the `length` column that `tokenize_task` writes, else the length of each
    row's `input_ids`, as transformers' LengthGroupedSampler measures plainly tokenised data."""
    if isinstance(dataset, datasets.Dataset):
        if "length" in dataset.column_names:
            return list(dataset["length"])
        if "input_ids" in dataset.column_names:  # counted in Arrow: no row is decoded into Python
            return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()
    try:
        return [len(row["input_ids"]) for row in dataset]
    except (KeyError, TypeError):
        raise ValueError(
            "each row of a task's dataset needs `input_ids` (tokenise it first: "
            "dataset.map(lambda batch: tokenizer(batch['text'], truncation=True), batched=True))"
        ) from None


__all__ = ["token_lengths", "tokenize_task"]
