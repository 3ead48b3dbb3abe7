"""The fine-tuned teacher of online distillation and of logits generation: a toolkit experiment,
``{teacher_exp}_{tmodel}_{task}/model-{tckpt}.pt`` with the teacher experiment's config.json (max_seq_len,
num_class, training split, ptrain_ver) and its model folder (Hugging Face config and tokenizer); or a
sequence-classification model fine-tuned elsewhere (``--teacher_hf``: a Hugging Face folder or hub name), whose
``id2label`` must name the task's labels (its outputs are put in the task's label order) or be mapped with
``--teacher_label_map``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from . import config as cfg
from .engine.checkpoint import load_checkpoint_into
from .errors import UserError
from .experiment import ExperimentDir, closest_experiments
from .io_utils import sha256_file
from .models.classifier import (
    build_from_config,
    check_checkpoint,
    load_classifier,
    load_model_dir,
    load_pretrained_config,
    load_tokenizer,
    weight_file_hashes,
)

if TYPE_CHECKING:  # for the checker only: transformers' modeling and tokenizer modules take seconds to import
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from .tasks.task import Task


@dataclass
class Teacher:
    name: str  # the experiment folder's name, or the Hugging Face source as given
    record: dict[str, Any]  # the teacher experiment's config.json ({} for a Hugging Face teacher)
    hf_config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    checkpoint: Path | None  # the toolkit checkpoint (None: a Hugging Face teacher)
    step: int | None
    exp: ExperimentDir | None = None
    source: str | None = None  # --teacher_hf
    label_order: list[int] | None = None  # the teacher's output index of each task label (None: already in order)

    @property
    def num_layers(self) -> int:
        return self.hf_config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.hf_config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.hf_config.num_attention_heads

    def describe(self) -> str:
        return f"{self.name} model-{self.step}.pt" if self.source is None else f"{self.source} (Hugging Face)"

    def summary(self) -> str:
        return f"{self.describe()} ({self.num_layers} layers)"

    def checkpoint_name(self) -> str:
        """The weights' source as config.json records it: ``{experiment}/model-{step}.pt`` or the Hugging Face
        source."""
        if self.checkpoint is not None:
            return f"{self.name}/{self.checkpoint.name}"
        assert self.source is not None  # a teacher is a toolkit checkpoint or a Hugging Face source
        return self.source

    def input_hashes(self) -> dict[str, str]:
        """sha256 of the files the teacher's weights come from (recorded as inputs of the run)."""
        if self.source is None:
            assert self.checkpoint is not None  # a toolkit teacher (no Hugging Face source) has its checkpoint
            return {str(self.checkpoint): sha256_file(self.checkpoint)}
        return weight_file_hashes(self.source)

    def build(self) -> torch.nn.Module:
        """The teacher model with its weights, in eval mode, every parameter frozen; a Hugging Face teacher's
        outputs in the task's label order."""
        if self.source is None:
            assert self.checkpoint is not None  # a toolkit teacher (no Hugging Face source) has its checkpoint
            model = build_from_config(self.hf_config)
            load_checkpoint_into(model, self.checkpoint)
        else:
            model = load_classifier(self.source, self.hf_config, "--teacher_hf")
            if self.label_order is not None:
                reorder_outputs(model, self.label_order)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


@dataclass
class Teachers:
    """Several named teachers (a distillation recipe's ``teachers:``), each with its weight in the combination of
    their logits; the first is the primary: the run's tokenizer, sequence length, classes and pretrained layers are
    its. Built, they run as one :class:`~fine_tune.models.teacher_set.TeacherSet`."""

    members: tuple[tuple[str, Teacher, float], ...]

    @property
    def primary(self) -> Teacher:
        return self.members[0][1]

    def summary(self) -> str:
        return "set " + "; ".join(f"{name}: {t.summary()[:-1]}, weight {weight:g})" for name, t, weight in self.members)

    def input_hashes(self) -> dict[str, str]:
        return {k: v for _, t, _ in self.members for k, v in t.input_hashes().items()}

    def build(self) -> torch.nn.Module:
        """The teachers' set; a recipe naming one teacher: that teacher's model."""
        from .models.teacher_set import TeacherSet

        if len(self.members) == 1:
            return self.primary.build()
        built = {self.members[0][0]: self.primary.build()}
        for name, t, _ in self.members[1:]:
            # building a model draws its random initialisation before the weights load: the other teachers draw
            # from a forked generator, so the run's random stream (the student's dropout) is the one-teacher run's
            with torch.random.fork_rng(devices=[]):
                built[name] = t.build()
        return TeacherSet(built)


def open_teacher(
    exp_root: Path,
    teacher_exp: str,
    tmodel: str,
    task: str,
    tckpt: int | str,
    choose: tuple[Task, Path | None] | None = None,
) -> Teacher:
    """Check the teacher folder, its config and checkpoint (readable, of the teacher's shape); clear errors name
    what is missing and what exists. ``tckpt`` ``best``: the checkpoint ``--ckpt best`` would choose
    (selection.resolve_ckpt: on the task's dev split, by the teacher's metric for best), ``choose`` being
    (the :class:`~fine_tune.tasks.task.Task`, the data root); refused in one line when the teacher has no such
    evaluation."""
    exp = ExperimentDir.of(exp_root, teacher_exp, tmodel, task, "--teacher_exp")
    if not exp.config_path.is_file():
        root = Path(exp_root)
        count = sum((p / "config.json").is_file() for p in root.iterdir()) if root.is_dir() else 0
        close = closest_experiments(root, exp.path.name)
        n = f"{count} experiment{'s' if count != 1 else ''}"
        hint = (
            f"; did you mean {', '.join(close)}? ({n} in {root})"
            if close
            else f"; {root} holds {n}, none with a similar name"
            if count
            else f"; {root} holds no experiment"
        )
        raise UserError(f"--teacher_exp {teacher_exp} --tmodel {tmodel}: teacher folder {exp.path} not found{hint}")
    record = cfg.load_config(exp.config_path, required=("max_seq_len", "task"))
    if tckpt == "best":
        from .selection import resolve_ckpt

        assert choose is not None  # the callers give it (the task, the data root) with tckpt best
        task_def, data_root = choose
        try:
            tckpt, _ = resolve_ckpt(
                exp,
                "best",
                task_def.dev_split,
                task=task_def,
                model=tmodel,
                experiment=teacher_exp,
                data_root=data_root,
                flag="--tckpt",
            )
        except UserError as e:
            raise UserError(str(e) if str(e).startswith("--tckpt") else f"--tckpt best: {e}") from None
    assert isinstance(tckpt, int)  # a step: as given, or best resolved above
    ckpt = exp.checkpoint_path(tckpt)
    if not ckpt.is_file():
        have = ", ".join(map(str, exp.checkpoints())) or "none"
        raise UserError(f"--tckpt {tckpt}: teacher checkpoint {ckpt} not found; checkpoints there: {have}")
    hf_config, tokenizer = load_model_dir(exp.model_dir)
    if hf_config.model_type != tmodel:
        raise UserError(f"--tmodel {tmodel}: {exp.path} holds a {hf_config.model_type!r} model")
    check_checkpoint(hf_config, ckpt)  # a truncated or foreign checkpoint is refused before anything is written
    return Teacher(exp.name, record, hf_config, tokenizer, ckpt, tckpt, exp=exp)


def _label_key(name: object) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def match_labels(id2label: dict[Any, str], task: Task, label_map: str | None, source: str) -> list[int] | None:
    """The teacher's output index of each of the task's labels: from ``--teacher_label_map`` when given, else by
    matching ``id2label``'s names with the task's label names (Hugging Face's) or the labels as its files write
    them, case and punctuation aside. The latter are the names the toolkit's own exports carried before it took
    Hugging Face's (QQP ``0``/``1``, BoolQ ``false``/``true``): such a teacher is the same classes, matched by
    name, in whatever order its outputs come. None when the teacher's order is already the task's."""
    n = task.num_class
    names = [id2label[i] if i in id2label else id2label.get(str(i)) for i in range(len(id2label))]
    if len(names) != n:
        raise UserError(
            f"--teacher_hf {source!r} has {len(names)} outputs ({', '.join(map(str, names))}); "
            f"{task.name} has {n} ({', '.join(task.label_names)})"
        )
    if label_map is not None:
        try:
            order = [int(x) for x in label_map.replace(" ", "").split(",")]
        except ValueError:
            raise UserError(
                f"--teacher_label_map {label_map!r}: expected comma-separated output indices, e.g. "
                f"{','.join(map(str, range(n)))}"
            ) from None
        if sorted(order) != list(range(n)):
            raise UserError(
                f"--teacher_label_map {label_map!r}: give each of the teacher's output indices "
                f"0..{n - 1} once, for {task.name}'s labels {', '.join(task.label_names)} in that order"
            )
        return None if order == list(range(n)) else order
    if n == 1:  # regression: one score, nothing to name
        return None
    keys = [_label_key(x) for x in names]
    for candidates in (task.label_names, getattr(task, "file_labels", None)):
        if not candidates or len(candidates) != n:
            continue
        wanted = [_label_key(x) for x in candidates]
        if sorted(wanted) == sorted(keys) and len(set(keys)) == n:
            order = [keys.index(w) for w in wanted]
            return None if order == list(range(n)) else order
    files = getattr(task, "file_labels", None)
    spelled = f", or as its files write them: {', '.join(files)}" if files and files != task.label_names else ""
    raise UserError(
        f"--teacher_hf {source!r}: its labels ({', '.join(map(str, names))}) are not {task.name}'s "
        f"({', '.join(task.label_names)}{spelled}); name the teacher's output of each with "
        f"--teacher_label_map, e.g. {','.join(map(str, range(n)))}"
    )


def reorder_outputs(model: PreTrainedModel, order: list[int]) -> None:
    """Put a classifier's outputs in ``order`` (output i becomes the old output ``order[i]``) by permuting the rows of
    its last linear layer (whatever the family's head looks like) and its id2label."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(order)][-1]
    with torch.no_grad():
        last.weight.copy_(last.weight[order])
        if last.bias is not None:
            last.bias.copy_(last.bias[order])
    old = dict(cast("dict[int, str]", model.config.id2label))  # set by transformers when the config is made
    model.config.id2label = {i: old[j] for i, j in enumerate(order)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}


def open_hf_teacher(source: str, task: Task, label_map: str | None) -> Teacher:
    """A fine-tuned Hugging Face sequence classifier as the teacher: its config (of a family the toolkit runs),
    weights present, tokenizer, and its labels matched with the task's; all before anything is written."""
    config = load_pretrained_config(source, None, "--teacher_hf")
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise UserError(
            f"--teacher_hf {source!r} is a {', '.join(archs)}, not a fine-tuned sequence classifier "
            f"(fine-tune it first, e.g. with run_fine_tune.py)"
        )
    # id2label: set by transformers when the config is made
    order = match_labels(dict(cast("dict[Any, str]", config.id2label)), task, label_map, source)
    tokenizer = load_tokenizer(source, "--teacher_hf")
    return Teacher(source, {}, config, tokenizer, None, None, source=source, label_order=order)
