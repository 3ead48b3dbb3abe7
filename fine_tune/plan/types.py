"""What every plan is made of: plain frozen records. A training run's :class:`RunPlan` (built by
:mod:`fine_tune.plan.training`, carried out by :mod:`fine_tune.run`), and the plans of the scripts that use a trained
experiment or the tables (built by :mod:`fine_tune.plan.inference`, carried out by ``evaluate``, ``export``,
``submission`` and ``results``)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..experiment import ExperimentDir
from ..selection import Rule
from ..settings import DeviceFlags
from ..tasks import Example, Task

if TYPE_CHECKING:  # the engine (torch) is imported where it is used: the tables' plans (results_table.py) need none
    import numpy as np
    import torch

    from ..engine.device import Precision
    from ..engine.trainer import TrainSettings
    from ..methods.base import Method


@dataclass(frozen=True)
class Split:
    """A split of the task, parsed (and hashed) before anything is written."""

    name: str
    file: Path
    sha256: str  # the file's: an input of the run, checked on resume
    examples: list[Example]


@dataclass(frozen=True)
class TrainingEvaluation:
    """``--eval_dataset``: the student evaluated on a labelled split while it trains (engine/evaluation.py)."""

    split: Split
    every: int | None  # --eval_step (None: at each checkpoint only)
    batch_size: int
    patience: int | None  # --early_stop_patience
    max_examples: int | None = None  # --max_examples: the split's first rows only (recorded in its table)
    metric: str | None = None  # --metric_for_best, checked (None: the task's main metric)


@dataclass(frozen=True)
class Devices:
    """Where a command asks to run (``--device_id``/``--num_gpu``/``--amp``/``--amp_dtype``, and for online
    distillation ``--tdevice_id``/``--gate_device_id``): resolved to torch devices by :meth:`resolve` once every
    input is checked."""

    device_id: int | None
    num_gpu: int | None
    amp: bool
    amp_dtype: str
    teacher_device_id: int | None = None  # --tdevice_id
    gate_device_id: int | None = None  # --gate_device_id
    ddp_timeout: timedelta | None = None  # --ddp_timeout (None: engine/distributed.DEFAULT_TIMEOUT)
    deterministic: bool = False  # --deterministic

    @classmethod
    def of(
        cls, device_flags: DeviceFlags, teacher_device_id: int | None = None, gate_device_id: int | None = None
    ) -> Devices:
        """From a script's ``DeviceFlags`` group (the planners')."""
        d = device_flags
        return cls(
            d.device_id,
            d.num_gpu,
            d.amp,
            d.amp_dtype,
            teacher_device_id,
            gate_device_id,
            timedelta(seconds=d.ddp_timeout),
            d.deterministic,
        )

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The process-wide settings of a command, from its start to its end: the process group's timeout (given
        before anything creates the group) and ``--deterministic`` (engine/determinism.py)."""
        from ..engine import distributed
        from ..engine.determinism import deterministic_algorithms

        distributed.configure(self.ddp_timeout or distributed.DEFAULT_TIMEOUT)
        with deterministic_algorithms(self.deterministic):
            yield

    def resolve(self, quiet: bool = False) -> tuple[torch.device, Precision]:
        """The student's (the model's) device and the precision asked for, after every input has been checked (so
        an error is never preceded by device warnings); ``quiet``: without the warnings said once already."""
        from ..engine.device import resolve_device, resolve_precision

        device = resolve_device(self.device_id, self.num_gpu, quiet=quiet)
        return device, resolve_precision(self.amp, self.amp_dtype, device, quiet=quiet)


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
    """The layer-contribution heat-map drawn at each checkpoint from the first rows of a dev split, under the
    method's caption (``Method.map_caption``: what the map shows)."""

    split: str
    examples: list[Example]
    caption: str


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
    evaluation: TrainingEvaluation | None = None
    teacher: Any = None  # fine_tune.teacher.Teacher (online distillation)
    teacher_logits: np.ndarray | None = None  # offline distillation: [rows, num_class], row-aligned with train
    layer_map: LayerMapPlan | None = None
    notes: tuple[str, ...] = field(default=())  # what the plan decided for the user, printed once the run starts
    # a run started before a fidelity fix, resumed: the old rule of each field config.LEGACY_FIELDS names, with which
    # the method was built (the start decision checks it against config.json under the experiment's lock)
    legacy: dict[str, Any] = field(default_factory=dict)
    reporting: Any = None  # fine_tune.reporting.Reporting: --report_to resolved (None: report nothing)


# -- the scripts that use a trained experiment, and the tables ------------------------------------------------
@dataclass(frozen=True)
class TrainedExperiment:
    """The experiment a script reads: its folder (named, and for a toolkit experiment required to hold a
    config.json), its task and the data root the task's files live under."""

    data_root: Path
    task: Task
    exp: ExperimentDir
    experiment: str  # --experiment as given (the commands that error lines suggest name it)
    model: str  # --model


@dataclass(frozen=True)
class CheckpointChoice:
    """``--ckpt`` parsed (a step, ``best``, ``last`` or None: the newest checkpoint) and the split that chooses
    ``best`` (``--select_on``, default the task's dev split; checked). The step itself is resolved from the
    experiment folder when the run reads it (``evaluate._checkpoint``)."""

    ckpt: int | str | None
    select_on: str


@dataclass(frozen=True)
class ForeignTeacher:
    """``run_fine_tune_gen_logits.py --teacher_hf``: a classifier fine-tuned elsewhere."""

    source: str  # a Hugging Face folder or hub name
    label_map: str | None  # --teacher_label_map as given (checked when the teacher is opened)
    max_seq_len: int


@dataclass(frozen=True)
class EvalPlan:
    """``run_fine_tune_eval.py``: every checkpoint from ``first_ckpt`` on, on one labelled split."""

    target: TrainedExperiment
    split: str
    max_examples: int | None
    first_ckpt: int
    save_predictions: bool
    batch_size: int
    devices: Devices
    reporting: Any = None  # fine_tune.reporting.Reporting: --report_to resolved (None: report nothing)


@dataclass(frozen=True)
class PredictionPlan:
    """``generate_test_prediction.py``: one checkpoint's predictions on a split, as the task's submission file."""

    target: TrainedExperiment
    split: str | None  # None with predict_file
    max_examples: int | None
    checkpoint: CheckpointChoice
    batch_size: int
    devices: Devices
    out: Path  # the official name in the experiment folder; with max_examples <name>.partial-<N>.<ext> (checked:
    # no file generate_test_prediction.py did not write, unless --overwrite); with predict_file the predictions file
    predict_file: Path | None = None  # --predict_file: rows of a file of one's own instead of the split


@dataclass(frozen=True)
class LogitsPlan:
    """``run_fine_tune_gen_logits.py``: one checkpoint's (or with ``teacher`` a foreign classifier's) logits on a
    split, written as the logits data set named after the experiment."""

    target: TrainedExperiment  # with a foreign teacher: the folder names the data set only (it need not exist)
    split: str
    max_examples: int | None
    checkpoint: CheckpointChoice | None  # None with a foreign teacher
    teacher: ForeignTeacher | None
    batch_size: int
    devices: Devices
    overwrite: bool


@dataclass(frozen=True)
class ExportPlan:
    """``export_model.py``: one checkpoint as a Hugging Face folder or (``format`` onnx) an ONNX model."""

    target: TrainedExperiment
    checkpoint: CheckpointChoice
    format: str  # hf | onnx
    quantize: str | None  # int8 (onnx only)
    out: Path | None  # None: <experiment folder>/hf-model-<step> (onnx-model-<step>), once the step is known
    check_split: str | None  # onnx: the labelled split the export is checked on (the task's dev split)
    max_examples: int | None  # rows of check_split
    overwrite: bool


@dataclass(frozen=True)
class SubmissionPlan:
    """``make_submission.py``: the benchmark's zip from the experiments under ``exp_root``."""

    exp_root: Path
    benchmark: str
    use: dict[str, str]  # task -> experiment folder name (--use TASK=FOLDER)
    out: Path
    data_root: Path | None = None  # where each file's split is checked against its record


@dataclass(frozen=True)
class ResultsPlan:
    """``results_table.py``: the table of ``task`` under ``exp_root`` and the files it writes."""

    exp_root: Path
    task: Task
    rule: Rule
    splits: list[str] | None  # reported splits (checked); None: every evaluated labelled split
    experiments: list[str] | None  # --experiments globs; None: every evaluated experiment
    out: Path  # the markdown file; paths: the files this run writes, it and the ones beside it (output_paths)
    paths: dict[str, Path]
    compare: tuple[str, ...] | None  # two experiment folder names
    compare_split: str | None  # with compare: its split (checked)
    resamples: int
    bootstrap_seed: int
    commands: bool
    plot: bool
    curves: tuple[str, ...] | None  # --curves globs (at least one)
    data_root: Path | None = None  # the task's files: each evaluation table is checked against its split's rows
    columns: tuple[str, ...] | None = (
        None  # --columns names (checked against the table's columns once scanned); None: default
    )


Runner = TypeVar("Runner", bound=Callable[..., Any])


def applies_devices(runner: Runner) -> Runner:
    """A command's runner (``run(plan)``, ``run_eval(plan)``...) carried out under its plan's
    :meth:`Devices.applied`."""

    @functools.wraps(runner)
    def wrapped(plan: Any, *args: Any, **kwargs: Any) -> Any:
        with plan.devices.applied():
            return runner(plan, *args, **kwargs)

    return wrapped  # type: ignore[return-value]  # functools.wraps: the runner's own signature
