"""What a resolved training run is made of (:class:`RunPlan`): plain frozen records, built by the planners in
:mod:`fine_tune.plan.training` and read by :mod:`fine_tune.run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.trainer import TrainSettings
from ..experiment import ExperimentDir
from ..methods.base import Method
from ..tasks import Example, Task


@dataclass(frozen=True)
class Split:
    """A split of the task, parsed (and hashed) before anything is written."""

    name: str
    file: Path
    sha256: str  # the file's: an input of the run, checked on resume
    examples: list[Example]


@dataclass(frozen=True)
class EvalPlan:
    """``--eval_dataset``: the student evaluated on a labelled split while it trains (engine/evaluation.py)."""

    split: Split
    every: int | None  # --eval_step (None: at each checkpoint only)
    batch_size: int
    patience: int | None  # --early_stop_patience
    max_examples: int | None = None  # --max_examples: the split's first rows only (recorded in its table)


@dataclass(frozen=True)
class Devices:
    """Where the run asks to run; resolved to torch devices once every input is checked (fine_tune/run)."""

    device_id: int | None
    num_gpu: int | None
    amp: bool
    amp_dtype: str
    teacher_device_id: int | None = None  # --tdevice_id
    gate_device_id: int | None = None  # --gate_device_id


@dataclass(frozen=True)
class PretrainedModel:
    """Fine-tuning: a pretrained encoder with a new classification head."""

    source: str  # --ptrain_ver: a hub name or a local folder
    family: str
    num_class: int
    dropout: float


@dataclass(frozen=True)
class StudentModel:
    """A distillation student: built from its widths (or loaded from ``pretrained``), then its layers
    ``init_pairs`` ((student, teacher) layers, 1-based) copied from the pretrained model ``init_source``."""

    family: str
    num_class: int
    dropout: float
    d_model: int
    d_ff: int
    d_emb: int
    num_attention_heads: int
    num_hidden_layers: int
    type_vocab_size: int
    vocab_size: int
    max_positions: int
    pretrained: str | None = None  # --student_ptrain_ver: its widths, layers and weights, a new head
    init_source: str | None = None
    init_pairs: tuple[tuple[int, int], ...] = ()
    init_attn_only: bool = False
    init_embeddings: bool = False


@dataclass(frozen=True)
class LayerMapPlan:
    """The layer-contribution heat-map drawn at each checkpoint from the first rows of a dev split."""

    split: str
    examples: list[Example]


@dataclass(frozen=True)
class RunPlan:
    """Everything one training run needs, resolved and checked; :func:`fine_tune.run.run` carries it out."""

    exp: ExperimentDir
    data_root: Path
    task: Task
    train: Split  # for offline distillation: the logits set's rows (file: its logits.jsonl)
    tokenizer: Any
    max_seq_len: int
    padding: str  # "dynamic" | "max_length"
    padding_free: bool  # --padding_free auto
    model: PretrainedModel | StudentModel
    method: Method  # built complete (its own parameters are created by the run, after the seed)
    training: TrainSettings
    devices: Devices
    record: dict[str, Any]  # config.json's fields (without provenance, added when it is written)
    inputs: dict[str, str]  # every input file -> its sha256, recorded and checked on resume
    overwrite: bool
    evaluation: EvalPlan | None = None
    teacher: Any = None  # fine_tune.teacher.Teacher (online distillation)
    teacher_logits: np.ndarray | None = None  # offline distillation: [rows, num_class], row-aligned with train
    layer_map: LayerMapPlan | None = None
    notes: tuple[str, ...] = field(default=())  # what the plan decided for the user, printed once the run starts
    # a run started before a fidelity fix, resumed: the old rule of each field config.LEGACY_FIELDS names, with which
    # the method was built (the start decision checks it against config.json under the experiment's lock)
    legacy: dict[str, Any] = field(default_factory=dict)
