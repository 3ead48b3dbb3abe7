"""Tiny models and synthetic data sets made on the spot: the offline demo and the tests use them.

* :func:`write_tiny_model` writes a small pretrained-style folder of any family (config, random weights, a
  tokenizer over the synthetic vocabulary) that ``--ptrain_ver`` can point to.
* :func:`write_boolq` / :func:`write_qqp` write files in the official layouts. The label follows a cue
  word in the question (plus label noise), so a tiny model learns it in a few hundred steps.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .models.families import FAMILIES, Widths

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from .tasks.task import Task

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_SYL = ["ba", "ko", "ri", "mu", "te", "sa", "lo", "ne", "pi", "du", "ga", "fe", "zo", "hi", "wu", "ya"]
WORDS = sorted({a + b for a in _SYL for b in _SYL})  # 256 filler words
TRUE_CUES = ["always", "indeed", "surely", "certainly", "truly"]
FALSE_CUES = ["never", "hardly", "barely", "rarely", "nowhere"]
VOCAB = SPECIAL + sorted(set(WORDS + TRUE_CUES + FALSE_CUES + ["is", "does", "the", "a", "of", "?", "."]))


# the byte-pair-style families' special tokens (RoBERTa's order: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4)
BPE_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def tiny_tokenizer(family: str = "bert", max_positions: int = 128) -> PreTrainedTokenizerBase:
    """A tokenizer over the synthetic vocabulary, of the kind the family's record names: BERT's WordPiece
    (``"wordpiece"``, token types 0/1); or (``"bpe"``, RoBERTa and DeBERTa-v2) a word-level fast tokenizer with
    RoBERTa's special tokens and pair template ``<s> A </s></s> B </s>`` (no token types), so the two kinds
    tokenise the same text differently."""
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    f = FAMILIES.get(family)
    if f is not None and f.tokenizer == "wordpiece":
        return BertTokenizer(
            vocab={tok: i for i, tok in enumerate(VOCAB)}, do_lower_case=True, model_max_length=max_positions
        )
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(BPE_SPECIAL + VOCAB[len(SPECIAL) :])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_positions,
    )


def tiny_config(
    family: str,
    num_layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    ff: int = 64,
    emb: int = 16,
    max_positions: int = 128,
    vocab_size: int | None = None,
    **extra: Any,
) -> PretrainedConfig:
    """A small config of ``family`` (a Hugging Face model type the toolkit trains), from its record: the
    padding index and token types of its tiny tokenizer, its config names and rules, its tiny extras."""
    from transformers import AutoConfig

    f = FAMILIES.get(family)
    if f is None:
        raise ValueError(family)
    wordpiece = f.tokenizer == "wordpiece"
    pad = SPECIAL.index("[PAD]") if wordpiece else BPE_SPECIAL.index("<pad>")
    # WordPiece gives token types 0/1; the BPE-style template none (one type, which a family may write as none)
    kwargs = f.config_kwargs(
        dict(
            vocab_size=vocab_size or len(VOCAB),
            hidden_size=hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=ff,
            max_position_embeddings=max_positions,
            type_vocab_size=2 if wordpiece else 1,
            pad_token_id=pad,
        )
    )
    kwargs.update(f.tiny_extras(Widths(hidden=hidden, emb=emb)))
    return AutoConfig.for_model(family, **kwargs, **extra)


def write_tiny_model(
    folder: Path,
    family: str = "bert",
    num_layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    ff: int = 64,
    emb: int = 16,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """A small random 'pretrained' encoder folder of ``family`` with tokenizer, loadable by ``from_pretrained``."""
    import torch
    from transformers import AutoModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(family, num_layers, hidden, heads, ff, emb, max_positions)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    tiny_tokenizer(family, max_positions).save_pretrained(folder)
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


def unlabelled_id(i: int) -> int:
    """The id of row ``i`` of a synthetic test split: unique, unsorted and never the row number (1000 + a
    permutation of 0..10006), so a submission that numbers its rows instead of copying the file's ids is caught."""
    return 1000 + (7919 * i + 17) % 10007


def boolq_rows(
    n: int, seed: int, labelled: bool, noise: float = 0.05, string_labels: bool = False
) -> list[dict[str, Any]]:
    """BoolQ rows; labelled splits are numbered 0..n-1 as the official files are, unlabelled (test) rows carry
    :func:`unlabelled_id` ids."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, label = _question(rng, rng.randint(0, 1), noise)
        row = {
            "question": question,
            "passage": _sentence(rng, rng.randint(8, 40)) + " .",
            "idx": i if labelled else unlabelled_id(i),
        }
        if labelled:
            row["label"] = ("true" if label else "false") if string_labels else bool(label)
        rows.append(row)
    return rows


def write_boolq(
    data_root: Path, n_train: int = 256, n_val: int = 128, n_test: int = 64, seed: int = 0, string_labels: bool = False
) -> Path:
    folder = Path(data_root) / "BoolQ"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, labelled, s in (
        ("train", n_train, True, seed),
        ("val", n_val, True, seed + 1),
        ("test", n_test, False, seed + 2),
    ):
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
                lines.append(f"{unlabelled_id(i)}\t{q1}\t{q2}")  # ids that are not row numbers
            else:
                lines.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{q1}\t{q2}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_submission_file(path: Path, task: Task, ids: Sequence[int], prediction: int | float = 0) -> None:
    """A submission file of ``task`` (a Task) as generate_test_prediction.py writes it, without its record: every id
    of ``ids`` predicted as the class index ``prediction`` (the score, for a regression task)."""
    from .tasks.example import Example

    task.write_submission(Path(path), [Example(i, "", None, None) for i in ids], [prediction] * len(ids))
