"""Tiny models and synthetic data sets made on the spot: the offline demo and the tests use them.

* :func:`write_tiny_model` writes a small pretrained-style BERT or ALBERT folder (config, random weights,
  a WordPiece tokenizer over the synthetic vocabulary) that ``--ptrain_ver`` can point to.
* :func:`write_boolq` / :func:`write_qqp` write files in the official layouts. The label follows a cue
  word in the question (plus label noise), so a tiny model learns it in a few hundred steps.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_SYL = ["ba", "ko", "ri", "mu", "te", "sa", "lo", "ne", "pi", "du", "ga", "fe", "zo", "hi", "wu", "ya"]
WORDS = sorted({a + b for a in _SYL for b in _SYL})  # 256 filler words
TRUE_CUES = ["always", "indeed", "surely", "certainly", "truly"]
FALSE_CUES = ["never", "hardly", "barely", "rarely", "nowhere"]
VOCAB = SPECIAL + sorted(set(WORDS + TRUE_CUES + FALSE_CUES + ["is", "does", "the", "a", "of", "?", "."]))


def write_tiny_model(folder: Path, family: str = "bert", num_layers: int = 2, hidden: int = 32, heads: int = 2,
                     ff: int = 64, emb: int = 16, max_positions: int = 128, seed: int = 0) -> Path:
    """A small random 'pretrained' encoder folder with tokenizer, loadable by ``from_pretrained``."""
    import torch
    from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=heads,
                  intermediate_size=ff, max_position_embeddings=max_positions, type_vocab_size=2, pad_token_id=0)
    torch.manual_seed(seed)
    if family == "bert":
        model = BertModel(BertConfig(**common))
    elif family == "albert":
        model = AlbertModel(AlbertConfig(embedding_size=emb, **common))
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(VOCAB)}, do_lower_case=True,
                              model_max_length=max_positions)
    tokenizer.save_pretrained(folder)
    return folder


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _question(rng: random.Random, label: int, noise: float) -> tuple[str, int]:
    cue = rng.choice(TRUE_CUES if label else FALSE_CUES)
    words = _sentence(rng, rng.randint(3, 7)).split()
    words.insert(rng.randint(0, len(words)), cue)
    if rng.random() < noise:
        label = 1 - label
    return "is " + " ".join(words) + " ?", label


def boolq_rows(n: int, seed: int, labelled: bool, noise: float = 0.05, string_labels: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, label = _question(rng, rng.randint(0, 1), noise)
        row = {"question": question, "passage": _sentence(rng, rng.randint(8, 40)) + " .", "idx": i}
        if labelled:
            row["label"] = ("true" if label else "false") if string_labels else bool(label)
        rows.append(row)
    return rows


def write_boolq(data_root: Path, n_train: int = 256, n_val: int = 128, n_test: int = 64, seed: int = 0,
                string_labels: bool = False) -> Path:
    folder = Path(data_root) / "BoolQ"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, labelled, s in (("train", n_train, True, seed), ("val", n_val, True, seed + 1),
                                  ("test", n_test, False, seed + 2)):
        rows = boolq_rows(n, s, labelled, string_labels=string_labels)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def write_qqp(data_root: Path, n_train: int = 256, n_dev: int = 128, n_test: int = 64, seed: int = 0) -> Path:
    folder = Path(data_root) / "QQP"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1), ("test", n_test, seed + 2)):
        rng = random.Random(s)
        if split == "test":
            lines = ["id\tquestion1\tquestion2"]
        else:
            lines = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
        for i in range(n):
            q1, label = _question(rng, rng.randint(0, 1), 0.05)
            q2 = _sentence(rng, rng.randint(3, 9)) + " ?"
            if split == "test":
                lines.append(f"{i}\t{q1}\t{q2}")
            else:
                lines.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{q1}\t{q2}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
