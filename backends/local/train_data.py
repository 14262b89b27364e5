"""The local trainer's data: the examples read and checked as ``ftbroker validate`` checks them, the held-out split
(``held_out_split``: ``ftbroker eval`` reads the same lines), each example tokenized with its loss mask
(``masking``) and cut to ``max_seq_len``. Runs in the trainer's process only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ftbroker.backends.local import masking
from ftbroker.backends.local.config import TrainConfig
from ftbroker.data.analysis import analyze
from ftbroker.data.reader import read_examples
from ftbroker.errors import DataIssue, DatasetError

@dataclass
class TrainData:
    train: list[masking.TokenizedExample]
    eval: list[masking.TokenizedExample]
    trained_tokens_per_epoch: int
    warnings: list[str] = field(default_factory=list)


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    """The examples of ``path`` as (line number, example), after the checks ``ftbroker validate`` makes (the
    trainer also runs on its own, e.g. on a rented instance, so it does not rely on the caller having checked)."""
    analyze(path, rules=()).raise_for_errors()  # the general checks: no provider's rules apply here
    return list(read_examples(path))


def held_out_split(config: TrainConfig) -> tuple[list, list]:
    """(train lines, eval lines) as (path, line number, row). ``ftbroker eval`` reads the same held-out lines."""
    train = [(config.dataset, n, row) for n, row in _read_jsonl(config.dataset)]
    if config.validation_dataset:
        return train, [(config.validation_dataset, n, row) for n, row in _read_jsonl(config.validation_dataset)]
    if config.eval_fraction == 0:
        return train, []
    held_out = max(1, round(len(train) * config.eval_fraction))
    if len(train) - held_out < 1:
        raise DatasetError([DataIssue(config.dataset, 0, f"{len(train)} examples are too few to hold out "
                                      f"eval_fraction {config.eval_fraction}; give a validation_dataset")])
    order = list(range(len(train)))
    random.Random(config.seed).shuffle(order)
    chosen = set(order[:held_out])
    return ([row for i, row in enumerate(train) if i not in chosen],
            [row for i, row in enumerate(train) if i in chosen])


def prepare_data(config: TrainConfig, tokenizer) -> TrainData:
    import jinja2

    train_lines, eval_lines = held_out_split(config)
    issues, tokenized, cut, dropped = [], {"train": [], "eval": []}, 0, 0
    for part, lines in (("train", train_lines), ("eval", eval_lines)):
        for path, number, row in lines:
            try:
                example = masking.tokenize_example(tokenizer, row)
            except (masking.TemplateError, jinja2.TemplateError, TypeError, KeyError, AttributeError) as exc:
                issues.append(DataIssue(path, number, str(exc) or type(exc).__name__))
                continue
            if len(example.input_ids) > config.max_seq_len:
                cut += 1
                example = masking.TokenizedExample(example.input_ids[:config.max_seq_len],
                                                   example.labels[:config.max_seq_len])
            if example.trained_tokens == 0:
                dropped += 1
                continue
            tokenized[part].append(example)
    if issues:
        raise DatasetError(issues)
    if not tokenized["train"]:
        raise DatasetError([DataIssue(config.dataset, 0, "no example has a token to train on "
                                      "(no assistant turn with weight 1 within max_seq_len)")])
    warnings = []
    if cut:
        warnings.append(f"{cut} examples longer than max_seq_len {config.max_seq_len} were cut at the end")
    if dropped:
        warnings.append(f"{dropped} examples had no token to train on (after cutting) and were left out")
    return TrainData(tokenized["train"], tokenized["eval"],
                 sum(e.trained_tokens for e in tokenized["train"]), warnings)


def to_dataset(examples: list[masking.TokenizedExample], datasets):
    return datasets.Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                       "labels": [e.labels for e in examples]})
