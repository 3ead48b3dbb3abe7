"""Sequence classifiers: a pretrained encoder of one of the families (``models/families.py``) and its Hugging
Face classification head.

This is exactly Hugging Face's ``AutoModelForSequenceClassification`` (for BERT: head weight ~ N(0, 0.02), zero
bias, as the original), so every checkpoint of this toolkit loads with ``AutoModelForSequenceClassification`` once
its config is beside it. ``--dropout`` sets the encoder's hidden and attention dropout and the head's dropout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from ..engine.checkpoint import check_fits, read_checkpoint
from ..errors import UserError
from ..io_utils import atomic_save_with
from .families import Family, get_family, student_config_kwargs

if TYPE_CHECKING:  # importing it loads transformers' modeling utilities (seconds): a model built loads them
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..tasks.example import Example


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


# What a local Hugging Face folder holds: weights (one of) and tokenizer files (one of). transformers 5 builds a
# tokenizer of special tokens only from a folder without tokenizer files, so their absence is checked here.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")


def weight_file_hashes(source: str | Path | None) -> dict[str, str]:
    """sha256 of the weight files of a local pretrained folder (none for a hub name): recorded as inputs of a run."""
    from ..io_utils import sha256_file

    folder = Path(source).expanduser() if source else None
    if folder is None or not folder.is_dir():
        return {}
    return {str(folder / name): sha256_file(folder / name) for name in WEIGHT_FILES if (folder / name).is_file()}


def load_tokenizer(source: str | Path, flag: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of a local folder or hub name; ``flag`` (e.g. ``--ptrain_ver``) is named in errors."""
    where = f"{flag} {str(source)!r}" if flag else f"could not load a tokenizer from {str(source)!r}"
    folder = Path(source).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{where}: no tokenizer file in the folder ({', '.join(TOKENIZER_FILES[:3])})")
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise UserError(f"{where}: {str(e).splitlines()[0]}") from None


def load_pretrained_config(
    ptrain_ver: str, model: str | None, flag: str = "--ptrain_ver", model_flag: str = "--model"
) -> PretrainedConfig:
    """The config of a pretrained model (``flag`` names where it was given): a path that does not exist is
    refused without asking the hub; a local folder must hold a config of the ``model_flag`` family (``model``;
    None: any family the toolkit trains) and weights."""
    folder = Path(ptrain_ver).expanduser()
    local = _looks_local(ptrain_ver)
    if local and not folder.is_dir():
        what = "is a file, not a model folder" if folder.exists() else "pretrained model folder not found"
        raise UserError(f"{flag} {ptrain_ver!r}: {what}")
    if local and not (folder / "config.json").is_file():
        raise UserError(f"{flag} {ptrain_ver!r}: no config.json in the folder (not a Hugging Face model folder)")
    try:
        config = AutoConfig.from_pretrained(ptrain_ver)
    except (OSError, ValueError) as e:
        what = "could not load the model config" if local else "no local folder of that name, and the hub lookup failed"
        raise UserError(f"{flag} {ptrain_ver!r}: {what} ({str(e).splitlines()[0]})") from None
    if model is not None and config.model_type != model:
        raise UserError(f"{flag} {ptrain_ver!r} is a {config.model_type!r} model but {model_flag} is {model!r}")
    get_family(config.model_type, f"{flag} {ptrain_ver!r}: model type")
    if folder.is_dir() and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{flag} {ptrain_ver!r}: no weights in the folder ({' or '.join(WEIGHT_FILES[::2])})")
    if folder.is_dir():
        check_weight_files(folder, f"{flag} {ptrain_ver!r}")
    return config


def _weight_files(folder: Path) -> list[Path]:
    """The weight files a local Hugging Face folder's model is loaded from: the first of :data:`WEIGHT_FILES`
    present, and for a sharded model (an ``.index.json``) the shards it names."""
    import json

    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{path}: not a readable weights index (no weight_map)") from None
        return [folder / shard for shard in shards]
    return []


def pretrained_weight_files(source: str, flag: str) -> list[Path]:
    """The weight files the pretrained model ``source`` loads from (``flag`` names it in errors): a local folder's
    (:func:`_weight_files`), or a hub name's from the hub's cache, downloaded there as ``from_pretrained`` would
    (the first of :data:`WEIGHT_FILES` the repository has; a sharded one's shards)."""
    import json

    folder = Path(source).expanduser()
    if folder.is_dir():
        return _weight_files(folder)
    from transformers.utils import cached_file

    try:
        for name in WEIGHT_FILES:
            found = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
            if found is None:
                continue
            if not name.endswith(".index.json"):
                return [Path(found)]
            shards = sorted(set(json.loads(Path(found).read_text(encoding="utf-8"))["weight_map"].values()))
            # (cached_file raises for a missing shard; a None would be Path's TypeError, caught below)
            return [Path(cast(str, cached_file(source, shard))) for shard in shards]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{flag} {source!r}: could not fetch its weights ({str(e).splitlines()[0]})") from None
    return []


def weights_error(where: str, path: Path, error: BaseException) -> UserError:
    """One line for a weight file that cannot be read (safetensors' or torch's own error, first line); ``where``
    (``--ptrain_ver 'x'``) names the source."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return UserError(
        f"{where}: {path} is not a readable weights file ({reason}): damaged or incomplete (a copy or "
        f"download that stopped?)"
    )


def check_weight_files(folder: Path, where: str) -> None:
    """Before anything is written: every weight file of the folder is there and whole, read without loading a
    tensor (safetensors: the header and that the data covers the file; a PyTorch file of the zip format: its
    directory, at the end of the file; one of the legacy format, older than torch 1.6, is not checked here: it is
    read when the weights load); ``where`` (``--ptrain_ver 'x'``) names the source in the error."""
    import zipfile

    from safetensors import safe_open

    for path in _weight_files(folder):
        if not path.is_file():
            raise UserError(f"{where}: {path} (named in its weights index) not found")
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            else:
                with open(path, "rb") as f:
                    zip_format = f.read(4) == b"PK\x03\x04"
                if zip_format:
                    with zipfile.ZipFile(path) as z:
                        z.namelist()
        except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError, zipfile's BadZipFile, OSError
            raise weights_error(where, path, e) from None


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence transformers' load reports and its own progress bar (the new head is expected to be missing; the
    weights being loaded, one bar per model); the Hugging Face hub's download bars (the bytes of a model fetched by
    name) stay as they were, and afterwards every bar is as it was: off where fine_tune/progress.py turned them off
    (``TQDM_DISABLE``, a torchrun rank but 0)."""
    import huggingface_hub.utils as hub
    from transformers.utils import logging as hf_logging

    verbosity, bars, downloads = (
        hf_logging.get_verbosity(),
        hf_logging.is_progress_bar_enabled(),
        not hub.are_progress_bars_disabled(),
    )
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers' bars, and the hub's with them
    if downloads:
        hub.enable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars and downloads:  # (with the hub's off, enabling would warn where HF_HUB_DISABLE_PROGRESS_BARS is set)
            hf_logging.enable_progress_bar()


def _from_pretrained(
    source: str, config: PretrainedConfig, family: Family, flag: str, new_head: bool = False
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """``AutoModelForSequenceClassification`` weights of ``source`` in ``config``, with the loading info; a source
    that cannot be read is a one-line :class:`UserError` naming ``flag`` (a weight file is called damaged only when
    it no longer reads whole: :func:`check_weight_files`). ``new_head``: weights of ``source`` whose shape differs
    from ``config``'s (a classifier head of another class count) are left out and start new."""
    where = f"{flag} {source!r}"
    try:
        with quiet_hf():
            return AutoModelForSequenceClassification.from_pretrained(
                source,
                config=config,
                attn_implementation=family.attn_implementation,
                output_loading_info=True,
                ignore_mismatched_sizes=new_head,
            )
    except (OSError, ValueError) as e:
        raise UserError(f"{where}: could not load the weights ({str(e).splitlines()[0]})") from None
    except Exception as e:  # safetensors' or torch's own error: a weight file damaged since it was checked, or not
        if type(e).__name__ != "SafetensorError" and not isinstance(e, (RuntimeError, EOFError)):
            raise
        folder = Path(source).expanduser()
        if folder.is_dir():
            check_weight_files(folder, where)  # damaged since the plan checked it: says so
        raise UserError(
            f"{where}: could not load the weights ({(str(e).strip().splitlines() or [type(e).__name__])[0]})"
        ) from None


def head_note(config: PretrainedConfig, num_class: int | None, flag: str, source: str) -> str | None:
    """What a run does with a classifier folder whose head has another class count than the task (``config``:
    the folder's, ``num_class``: the task's): its encoder is kept and its head replaced by a new one, as Hugging
    Face's run_glue does with ``--ignore_mismatched_sizes``; said in a note naming the discarded head's classes.
    None for a pretrained encoder or a head of the task's class count."""
    architectures = getattr(config, "architectures", None) or []
    if (
        num_class is None
        or config.num_labels == num_class
        or not any(a.endswith("ForSequenceClassification") for a in architectures)
    ):
        return None
    id2label = cast("dict[int, str]", config.id2label)  # set (int keys) by transformers when the config is made
    names = ", ".join(str(id2label[i]) for i in sorted(id2label))
    return (
        f"{flag} {source} is a classifier of {config.num_labels} classes ({names}): its head is discarded and "
        f"a new head for the task's {num_class} classes is trained (its encoder's weights are kept)"
    )


def build_pretrained_classifier(
    ptrain_ver: str, model: str, num_class: int, dropout: float, flag: str = "--ptrain_ver"
) -> PreTrainedModel:
    """A pretrained encoder (``flag`` names where it was given) + a new classification head of ``num_class``
    classes; a classifier folder's head of that class count is loaded, one of another count is replaced
    (:func:`head_note`)."""
    config = load_pretrained_config(ptrain_ver, model, flag)
    family = get_family(model)
    config.num_labels = num_class
    for name, value in family.dropout_kwargs(dropout).items():  # set on the config: DeBERTa's cls_dropout is optional
        setattr(config, name, value)
    return _from_pretrained(ptrain_ver, config, family, flag, new_head=True)[0]


def load_classifier(source: str, config: PretrainedConfig, flag: str) -> PreTrainedModel:
    """A fine-tuned sequence classifier as it was saved (its own head and labels), e.g. ``--teacher_hf``."""
    family = get_family(config.model_type, f"{flag} {source!r}: model type")
    model, info = _from_pretrained(source, config, family, flag)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise UserError(
            f"{flag} {source!r}: no weights for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
            f"(a pretrained encoder, not a fine-tuned classifier?)"
        )
    return model


def check_same_tokenisation(
    teacher_tokenizer: PreTrainedTokenizerBase,
    student_tokenizer: PreTrainedTokenizerBase,
    examples: Iterable[Example],
    teacher: str,
    student: str,
) -> None:
    """Token-level losses pair the teacher's and the student's tokens one to one: both tokenizers must turn the
    run's text into the same ids. Compared on the vocabulary and on the first rows of the training split."""
    same = teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab()
    if same:
        for ex in list(examples)[:64]:
            a = teacher_tokenizer(ex.text, ex.text_pair, truncation=True, max_length=512)["input_ids"]
            b = student_tokenizer(ex.text, ex.text_pair, truncation=True, max_length=512)["input_ids"]
            if a != b:
                same = False
                break
    if not same:
        raise UserError(
            f"the teacher {teacher} and the student {student} tokenise differently: layer-wise losses pair "
            f"their tokens one to one; use a student with the teacher's tokenizer, or logits KD "
            f"(run_fine_tune_gen_logits.py, then run_fine_tune_distill.py), which works across tokenizers"
        )


def student_config(
    model: str,
    *,
    vocab_size: int,
    num_class: int,
    d_model: int,
    d_ff: int,
    num_attention_heads: int,
    num_hidden_layers: int,
    type_vocab_size: int,
    dropout: float,
    max_position_embeddings: int,
    pad_token_id: int,
    d_emb: int | None = None,
) -> PretrainedConfig:
    if d_model % num_attention_heads:
        raise UserError(f"--d_model {d_model} is not divisible by --num_attention_heads {num_attention_heads}")
    kwargs = student_config_kwargs(
        model,
        vocab_size=vocab_size,
        num_class=num_class,
        d_model=d_model,
        d_ff=d_ff,
        num_attention_heads=num_attention_heads,
        num_hidden_layers=num_hidden_layers,
        type_vocab_size=type_vocab_size,
        dropout=dropout,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        d_emb=d_emb,
    )
    config = AutoConfig.for_model(model, **kwargs)
    config._attn_implementation = get_family(model).attn_implementation
    return config


def build_from_config(config: PretrainedConfig) -> PreTrainedModel:
    family = get_family(config.model_type, "model type")
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=family.attn_implementation)


def set_task_labels(config: PretrainedConfig, label_names: Sequence[str]) -> None:
    """Name the model's outputs by the task's labels (``id2label`` / ``label2id``, Hugging Face's names; a
    regression task's one output is its score): every model folder the toolkit saves carries its task's labels,
    never those of the folder the weights came from."""
    config.id2label = {i: name for i, name in enumerate(label_names)}
    config.label2id = {name: i for i, name in enumerate(label_names)}


def save_model_dir(path: Path, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """Write the Hugging Face config and the tokenizer (no weights) so the experiment works offline."""

    def save(tmp: Path) -> None:
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_save_with(Path(path), save)


def load_model_dir(path: Path) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: model config not found (an experiment written by another tool?)")
    config = AutoConfig.from_pretrained(path)
    return config, load_tokenizer(path)


def check_checkpoint(config: PretrainedConfig, ckpt_path: Path) -> None:
    """Check, without building the weights (meta device, no random numbers drawn) or reading the file into
    memory, that ``ckpt_path`` is readable and fits a model of ``config``; for refusing before anything is
    written."""
    state = read_checkpoint(ckpt_path, mmap=True)
    with torch.device("meta"):
        own = build_from_config(config).state_dict()
    check_fits(own, state, ckpt_path)
