"""The settings every entry script composes: flag groups, typed and validated, and the parsed :class:`Flags`.

Each group is a frozen dataclass: its fields are the flags (name, type, default, help), its ``key`` names it in
the parsed :class:`Flags`, and its ``__post_init__`` refuses bad values with a one-line :class:`UserError`. A
script's groups are one of the tuples below (``FINE_TUNE``, ``LAYERWISE``...), plus, for a layer-wise method,
the groups of its own that live beside it in ``fine_tune/methods/`` (its registry entry's ``flag_groups``). The
parsed :class:`Flags` hold one instance per group (``flags.optimiser.lr``), never mutated; a value resolved later
(e.g. from the teacher's config) makes a new :class:`Flags` with :meth:`Flags.replace`. Every flag has one
default, in its group; a script whose original had other defaults composes a subclass of the group that says so
(``Layerwise*``).

A leaf: this module knows no parser, no method and no engine (``fine_tune/cli.py`` builds the command line from
these groups; ``OptimiserFlags.settings`` reaches the engine's optimiser description only when called).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar, overload

from .errors import UserError
from .models.families import FAMILY_NAMES  # noqa: E402  (one record per family)
from .tasks.registry import TASKS

TASK_NAMES = tuple(TASKS)  # --task: GLUE's and SuperGLUE's Hugging Face configuration names
# how a split flag's help names the splits: each task has its own (its task record's files)
SPLITS_E_G = (
    "train (GLUE tasks: train, dev, test; SuperGLUE tasks: train, val, test; a task of your own: its task.json's)"
)


T = TypeVar("T")


@overload
def flag(default: None, help: str = "", *, required: Literal[True], **kw: Any) -> Any: ...
@overload
def flag(default: T, help: str = "", **kw: Any) -> T: ...
def flag(default: Any, help: str = "", **kw: Any) -> Any:
    """A flag: a dataclass field with its default and its help (and argparse's other settings, ``choices=...``).
    Typed by its default, so a field's annotation must admit it (``int | None`` for a default of None); a flag the
    command line requires (``required=True``) has no default the parsed value could keep, and its annotation says
    what argparse gives."""
    return field(default=default, metadata={"help": help, **kw})


def _positive(group: Any, *names: str) -> None:
    for name in names:
        value = getattr(group, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be positive, got {value}")


def _non_negative(group: Any, *names: str) -> None:
    for name in names:
        value = getattr(group, name)
        if value is not None and value < 0:
            raise UserError(f"--{name} must be >= 0, got {value}")


def _adam(beta1: float, beta2: float, eps: float, prefix: str = "") -> None:
    """What torch's AdamW would refuse (or silently mishandle), refused at parse time."""
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise UserError(f"--{prefix}{name} must lie in [0, 1), got {beta}")
    if eps <= 0:
        raise UserError(f"--{prefix}eps must be positive, got {eps}")


def _check_adamw(group: Any, prefix: str = "") -> None:
    """The checks of an AdamW group whose flags are ``--{prefix}lr``, ``beta1``, ``beta2``, ``eps``,
    ``weight_decay``, ``max_norm``, ``total_step`` and ``warmup_step``: the student's (:class:`OptimiserFlags`, no
    prefix) and LAD's gates' (``methods/lad.GateFlags``, ``gate_``). A schedule length left None (the gates'
    default: the student's) is checked where it is resolved."""
    _positive(group, f"{prefix}total_step", f"{prefix}lr")
    _non_negative(group, f"{prefix}weight_decay")
    _adam(getattr(group, f"{prefix}beta1"), getattr(group, f"{prefix}beta2"), getattr(group, f"{prefix}eps"), prefix)
    _non_negative(group, f"{prefix}warmup_step")
    total, warmup = getattr(group, f"{prefix}total_step"), getattr(group, f"{prefix}warmup_step")
    resolved_later = getattr(group, f"{prefix}num_epochs", None) is not None  # the plan checks it (--num_epochs)
    if total is not None and warmup is not None and warmup > total and not resolved_later:
        raise UserError(f"--{prefix}warmup_step {warmup} exceeds --{prefix}total_step {total}")
    _positive(group, f"{prefix}max_norm")


def step_or_best(value: str) -> int | str:
    """``--tckpt``: a checkpoint step, or ``best`` (resolved by the plan through fine_tune/selection.py)."""
    import argparse

    if value == "best":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a checkpoint step or 'best', got {value!r}") from None


SEED_RANGE = 2**63  # torch.manual_seed takes [-2^63, 2^64); the toolkit takes the non-negative part of both


# -- experiment tracking (--report_to) -----------------------------------------------------------------------
REPORT_TO = ("tensorboard", "mlflow", "wandb")  # Hugging Face's names (TrainingArguments.report_to)
REPORT_TO_HELP = (
    "where the run's parameters, scalars and final metrics go, as Hugging Face's --report_to: "
    "tensorboard, mlflow, wandb (several: space- or comma-separated), all (every one installed) or "
    "none (README.md, 'Experiment tracking')"
)


def report_targets(value: Any, flag: str = "--report_to") -> tuple[str, ...]:
    """``--report_to``'s value (a string or a list of them, each space- or comma-separated) as the names it gives,
    checked: ``tensorboard``, ``mlflow``, ``wandb``, or ``all`` / ``none`` alone. ``all`` stays ``all`` (which
    packages are installed is the plan's to find out: ``fine_tune/reporting.py``); ``none`` is ``()``."""
    items = [value] if isinstance(value, str) else list(value)
    names = [n for item in items for n in str(item).replace(",", " ").split()]
    if not names:
        raise UserError(f"{flag}: give tensorboard, mlflow, wandb, all or none")
    for name in names:
        if name not in (*REPORT_TO, "all", "none"):
            raise UserError(f"{flag} {name!r}: not a tracker; choose from {', '.join(REPORT_TO)}, all or none")
    if len(names) > 1 and ("all" in names or "none" in names):
        raise UserError(f"{flag} {' '.join(names)}: all and none stand alone")
    if names == ["none"]:
        return ()
    return tuple(dict.fromkeys(names))


# -- what a run is ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentFlags:
    key: ClassVar[str] = "experiment"
    experiment: str = flag(None, "experiment name; folder {experiment}_{model}_{task}", required=True)
    model: str = flag(
        "bert", "model family: the Hugging Face model type (config.json's model_type)", choices=FAMILY_NAMES
    )
    task: str = flag(
        None,
        "task: " + " ".join(TASK_NAMES) + " (GLUE's and SuperGLUE's, by Hugging Face's "
        "configuration names), or NAME for a task of your own, <data_root>/NAME/task.json "
        "(doc/methods.md)",
        required=True,
    )
    dataset: str | None = flag("train", "split to train on: one of the task's splits, e.g. " + SPLITS_E_G)


@dataclass(frozen=True)
class LayerwiseExperimentFlags(ExperimentFlags):
    dataset: str | None = flag(None, "training split (default: the teacher's)")


@dataclass(frozen=True)
class PredictionExperimentFlags(ExperimentFlags):
    dataset: str = flag(
        "test",
        "split to predict: one of the task's splits, e.g. test (mnli: test_matched, "
        "test_mismatched, ax); the file is the task's official submission file of that split",
    )


@dataclass(frozen=True)
class EvalExperimentFlags(ExperimentFlags):
    dataset: str = flag(
        "train", "split to evaluate: one of the task's labelled splits, e.g. dev (GLUE tasks), val (SuperGLUE tasks)"
    )


@dataclass(frozen=True)
class LogitsExperimentFlags(ExperimentFlags):
    dataset: str = flag("train", "split whose logits to write: one of the task's splits, e.g. " + SPLITS_E_G)


@dataclass(frozen=True)
class DistilExperimentFlags(ExperimentFlags):
    dataset: str = flag(
        "train",
        "logits data set to train on, as run_fine_tune_gen_logits.py printed its name "
        "({experiment}_{model}_{task} of the teacher), or NAME:SPLIT for its split other "
        "than train; always give it (the default, train, names no logits data set)",
    )


@dataclass(frozen=True)
class ExportExperimentFlags(ExperimentFlags):
    dataset: str = flag(
        "train", "not used by the export: a split of the task (--format onnx checks the model on the task's dev split)"
    )


@dataclass(frozen=True)
class PathFlags:
    key: ClassVar[str] = "paths"
    data_root: str | None = flag(None, "data root (default: env FT_DATA_ROOT, else <repo>/data/fine_tune)")
    exp_root: str | None = flag(
        None, "experiment root (default: env FT_EXP_ROOT, else <repo>/data/fine_tune_experiment)"
    )
    max_examples: int | None = flag(None, "use only the first N rows of the split (smoke runs, tests)")
    overwrite: bool = flag(
        False,
        "replace an existing experiment (or logits data set) with a different config, an "
        "existing export, or a submission file this command did not write",
    )

    def __post_init__(self) -> None:
        _positive(self, "max_examples")


@dataclass(frozen=True)
class DeviceFlags:
    key: ClassVar[str] = "device"
    device_id: int | None = flag(
        None,
        "CUDA device index; -1 = CPU (default: cuda:0 when CUDA is available, else the "
        "CPU); wins over --num_gpu; under torchrun each process takes its LOCAL_RANK's",
    )
    num_gpu: int | None = flag(
        None,
        "0 = CPU, >=1 = cuda:0 (one device; several GPUs: torchrun, README.md); --device_id "
        "says the same with an index (doc/methods.md, \"Flags kept from the original scripts\")",
    )
    amp: bool = flag(
        False,
        "mixed precision: fp16 autocast + GradScaler on CUDA (bf16 with --amp_dtype bf16); "
        "on CPU bf16 when the processor has native bf16, else fp32 with a warning",
    )
    amp_dtype: str = flag("fp16", "autocast dtype on CUDA", choices=("fp16", "bf16"))
    ddp_timeout: int = flag(
        1800,
        "under torchrun: seconds a process waits in a collective (or for the others to "
        "join) before the job fails; as Hugging Face's TrainingArguments.ddp_timeout. "
        "Rank 0's own work between collectives (hashing, checkpoints, heat-maps) must fit",
    )
    deterministic: bool = flag(
        False,
        "deterministic algorithms only (torch.use_deterministic_algorithms, cuBLAS "
        "workspace :4096:8, cuDNN deterministic, attention by PyTorch's math kernel): "
        "the condition for a bit-exact resume on a GPU; slower (doc/methods.md)",
    )

    def __post_init__(self) -> None:
        _positive(self, "ddp_timeout")


# -- training ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierFlags:
    key: ClassVar[str] = "classifier"
    num_class: int | None = flag(
        None, "number of classes (default: the task's, e.g. 3 for mnli and cb; 1: regression, as stsb)"
    )
    dropout: float = flag(0.1, "dropout of encoder (hidden and attention) and classifier head")

    def __post_init__(self) -> None:
        if self.num_class is not None and self.num_class < 1:
            raise UserError(f"--num_class must be at least 1 (1: regression), got {self.num_class}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must lie in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class DistilClassifierFlags(ClassifierFlags):
    num_class: int | None = flag(None, "number of classes (default: the logits data set's)")


@dataclass(frozen=True)
class LayerwiseClassifierFlags(ClassifierFlags):
    num_class: int | None = flag(None, "number of classes (default: the teacher's)")


@dataclass(frozen=True)
class OptimiserFlags:
    """The student's AdamW, schedule and clipping (:class:`fine_tune.engine.optim.OptimiserSettings`)."""

    key: ClassVar[str] = "optimiser"
    lr: float = flag(3e-5, "peak learning rate")
    beta1: float = flag(0.9, "AdamW beta1")
    beta2: float = flag(0.999, "AdamW beta2")
    eps: float = flag(1e-8, "AdamW epsilon")
    weight_decay: float = flag(0.01, "AdamW weight decay (not on names containing 'bias' or 'LayerNorm.weight')")
    max_norm: float = flag(1.0, "gradient clipping norm")
    total_step: int = flag(50000, "number of optimizer steps")
    warmup_step: int = flag(10000, "linear warmup steps, then linear decay to 0 at total_step")
    # issue 32 (train): the schedule in epochs and a warmup share, as Hugging Face's num_train_epochs/warmup_ratio;
    # the plan resolves them into total_step / warmup_step (plan/training.resolve_schedule), which config.json records
    num_epochs: float | None = flag(
        None,
        "train for N epochs of the training split (fractions too): --total_step = "
        "ceil(N x micro-batches per epoch / --accum_step); instead of --total_step",
        exclusive_with="total_step",
    )
    warmup_ratio: float | None = flag(
        None,
        "warm up for this share of the training steps: --warmup_step = "
        "ceil(R x total steps), R in [0, 1); instead of --warmup_step",
        exclusive_with="warmup_step",
    )

    def __post_init__(self) -> None:
        _check_adamw(self)
        _positive(self, "num_epochs")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"--warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class BatchingFlags:
    key: ClassVar[str] = "batching"
    batch_size: int = flag(32, "effective batch size per optimizer step")
    accum_step: int = flag(1, "micro-batches per optimizer step (each forward sees batch_size // accum_step)")
    max_seq_len: int | None = flag(512, "maximum tokens per (text, text_pair)")
    padding: str = flag(
        "dynamic",
        "pad each batch to its longest member (dynamic) or to max_seq_len (max_length)",
        choices=("dynamic", "max_length"),
    )
    group_by_length: bool = flag(
        False,
        "length-grouped micro-batches: each epoch's shuffle is cut into mega-batches "
        "of 50 micro-batches, each sorted by length, and the micro-batches shuffled, "
        "so dynamic padding pads little. Changes the training order and so the "
        "trajectory: off by default to stay faithful to the original",
    )

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "accum_step", "max_seq_len")
        if self.batch_size % self.accum_step:
            raise UserError(f"--batch_size {self.batch_size} is not divisible by --accum_step {self.accum_step}")


@dataclass(frozen=True)
class LayerwiseBatchingFlags(BatchingFlags):
    max_seq_len: int | None = flag(None, "maximum tokens per (text, text_pair) (default: the teacher's)")
    padding: str = flag(
        "max_length",
        "max_length: every batch padded to max_seq_len, the original (hidden MSE over "
        "padding positions too, LAD's gate LayerNorm over [max_seq_len, D]); dynamic: "
        "each batch padded to its longest member, faster, with hidden losses masked to "
        "the real tokens and a masked gate LayerNorm; changes results (doc/methods.md)",
        choices=("dynamic", "max_length"),
    )


@dataclass(frozen=True)
class RunFlags:
    key: ClassVar[str] = "run"
    seed: int = flag(42, "random seed (Python, NumPy, torch)")
    ckpt_step: int = flag(1000, "save model-{step}.pt every N optimizer steps (and at the end)")
    log_step: int = flag(500, "TensorBoard scalars every N optimizer steps")
    save_total_limit: int | None = flag(
        None,
        "keep only the newest K checkpoints (default: keep all, as the original); "
        "with --eval_dataset the best checkpoint on the task's main metric is kept too",
    )
    eval_dataset: str | None = flag(
        None,
        "evaluate the student on this labelled split while training (default: no "
        "evaluation during training, as the original: run_fine_tune_eval.py afterwards)",
    )
    eval_step: int | None = flag(
        None,
        "with --eval_dataset: evaluate every N optimizer steps (default: at each checkpoint "
        "only); every checkpoint is evaluated too",
    )
    eval_batch_size: int = flag(128, "rows per forward pass of the evaluation during training")
    early_stop_patience: int | None = flag(
        None, "with --eval_dataset: stop after P evaluations without a better main metric (default: never stop early)"
    )
    metric_for_best: str | None = flag(
        None,
        "the metric that decides the best checkpoint (keep-best of --save_total_limit, "
        "--early_stop_patience, run_fine_tune_eval.py's best, --ckpt best, --tckpt best "
        "of a student): any metric the task computes, or loss (the evaluation's mean "
        "cross-entropy, MSE for regression; lower is better) (default: the task's main "
        "metric)",
    )
    report_to: tuple[str, ...] = flag(("tensorboard",), REPORT_TO_HELP, nargs="+", metavar="TRACKER")

    def __post_init__(self) -> None:
        _positive(
            self, "ckpt_step", "log_step", "save_total_limit", "eval_step", "eval_batch_size", "early_stop_patience"
        )
        report_targets(self.report_to)
        for name in ("eval_step", "early_stop_patience"):
            if getattr(self, name) is not None and not self.eval_dataset:
                raise UserError(f"--{name} needs --eval_dataset (the split to evaluate on)")
        if not 0 <= self.seed < SEED_RANGE:
            raise UserError(f"--seed must lie in [0, 2^63), got {self.seed}")


@dataclass(frozen=True)
class SpeedFlags:
    """How fast the same model trains; changes float rounding only (doc/performance.md)."""

    key: ClassVar[str] = "speed"
    padding_free: str = flag(
        "auto",
        "auto: BERT's position-wise layers run on the real tokens only, and attention "
        "in buckets of similar lengths, wherever no loss looks at padding positions "
        "(fine-tuning, logits KD, layer-wise losses under --padding dynamic), and the "
        "same layers over the padded grid elsewhere; cheaper dropout masks on CPU: the "
        "same model, fewer FLOPs; off: Hugging Face's padded forward",
        choices=("auto", "off"),
    )
    compile: bool = flag(
        False,
        "torch.compile the student's (and the teacher's) forward; whether it pays depends on "
        "the machine and the run's length (doc/performance.md). Float-rounding changes only",
    )
    gradient_checkpointing: bool = flag(
        False,
        "keep only each student layer's input for the backward pass and "
        "recompute the layer there (torch.utils.checkpoint, random state "
        "replayed): activation memory of one layer instead of all, for about "
        "one more forward per step; the same gradients (doc/performance.md)",
    )


@dataclass(frozen=True)
class PretrainedFlags:
    key: ClassVar[str] = "pretrained"
    ptrain_ver: str = flag(None, "pretrained model: a Hugging Face hub name or a local folder", required=True)


@dataclass(frozen=True)
class StudentFlags:
    key: ClassVar[str] = "student"
    d_model: int = flag(768, "student hidden size")
    d_ff: int = flag(3072, "student feed-forward size")
    d_emb: int = flag(128, "student embedding size (ALBERT only)")
    num_attention_heads: int = flag(16, "student attention heads")
    num_hidden_layers: int = flag(6, "student layers")
    type_vocab_size: int = flag(2, "student token type vocabulary")
    init_start: int | None = flag(
        None,
        "initialise student layers from the teacher's pretrained layers "
        "range(init_start, init_end + 1, init_step), 1-based (off unless given)",
    )
    init_end: int | None = flag(None, "last teacher layer (inclusive) for --init_start")
    init_step: int = flag(1, "teacher layer step for --init_start")
    init_attn_only: bool = flag(
        False, "with --init_start: copy only the self-attention weights (the original's 'attn_W only')"
    )
    init_embeddings: bool = flag(
        False,
        "with the layer initialisation: also copy the pretrained teacher's embeddings "
        "(the original leaves them random; needs the teacher's widths)",
    )
    student_ptrain_ver: str | None = flag(
        None,
        "a pretrained student (Hugging Face folder or hub name, of --model's family) "
        "instead of one built from --d_model/--d_ff/--num_attention_heads/"
        "--num_hidden_layers: its widths, layers and weights, a new head; of another "
        "width than the teacher's, hidden losses go through a learned projection",
    )

    def __post_init__(self) -> None:
        _positive(self, "d_model", "d_ff", "num_attention_heads", "num_hidden_layers", "type_vocab_size", "d_emb")
        if self.d_model % self.num_attention_heads:
            raise UserError(
                f"--d_model {self.d_model} is not divisible by --num_attention_heads {self.num_attention_heads}"
            )
        if (self.init_start is None) != (self.init_end is None):
            raise UserError("--init_start and --init_end go together")
        if self.student_ptrain_ver is not None and (self.init_start is not None or self.init_embeddings):
            raise UserError(
                "--init_start/--init_embeddings copy pretrained teacher layers into a student built from "
                "flags; a --student_ptrain_ver student brings its own weights: give one or the other"
            )


@dataclass(frozen=True)
class DistilFlags:
    key: ClassVar[str] = "distil"
    softmax_temp: float = flag(1.0, "temperature T of the soft loss")
    soft_weight: float = flag(1.0, "weight of T^2 * KL(teacher || student)")
    hard_weight: float = flag(1.0, "weight of the cross-entropy with the gold labels")

    def __post_init__(self) -> None:
        _positive(self, "softmax_temp")
        _non_negative(self, "soft_weight", "hard_weight")


@dataclass(frozen=True)
class LayerwiseDistilFlags(DistilFlags):
    soft_weight: float = flag(0.2, "weight of T^2 * KL(teacher || student)")
    hard_weight: float = flag(0.8, "weight of the cross-entropy with the gold labels")


# -- online distillation -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherFlags:
    key: ClassVar[str] = "teacher"
    teacher_exp: str | None = flag(
        None, "fine-tuned teacher experiment (folder {teacher_exp}_{tmodel}_{task}); or --teacher_hf"
    )
    tmodel: str = flag("bert", "teacher model family", choices=FAMILY_NAMES)
    tckpt: int | str | None = flag(
        None,
        "teacher checkpoint step (model-{tckpt}.pt), or best: the teacher's best checkpoint on "
        "its dev split's evaluation, by its --metric_for_best, as --ckpt best; with --teacher_exp",
        type=step_or_best,
    )
    teacher_hf: str | None = flag(
        None,
        "a teacher fine-tuned elsewhere: a Hugging Face sequence-classification folder or hub "
        "name (instead of --teacher_exp/--tckpt); its id2label must name the task's labels "
        "(or --teacher_label_map); give --max_seq_len",
    )
    teacher_label_map: str | None = flag(
        None,
        "with --teacher_hf: the teacher's output index of each of the task's labels, in "
        "the task's order, comma-separated (e.g. 2,1,0)",
    )
    tdevice_id: int | None = flag(
        None,
        "teacher's CUDA device index; -1 = CPU (default: the student's device); under "
        "torchrun relative to each rank: k means cuda:(LOCAL_RANK + k * processes per node)",
    )

    def __post_init__(self) -> None:
        if self.teacher_hf is not None and (self.teacher_exp is not None or self.tckpt is not None):
            raise UserError("--teacher_hf names the teacher: give it instead of --teacher_exp/--tckpt, not with them")
        if self.teacher_hf is None and (self.teacher_exp is None or self.tckpt is None):
            raise UserError(
                "the teacher: give --teacher_exp and --tckpt (a teacher fine-tuned by this toolkit) or "
                "--teacher_hf (a fine-tuned Hugging Face model)"
            )
        if self.teacher_label_map is not None and self.teacher_hf is None:
            raise UserError(
                "--teacher_label_map maps the outputs of a --teacher_hf teacher; a toolkit teacher has the "
                "task's labels"
            )


@dataclass(frozen=True)
class RecipeTeacherFlags(TeacherFlags):
    """The teacher flags of ``run_distil.py --recipe FILE`` whose recipe names its teachers (``teachers:``): none of
    them may name another teacher (``--tdevice_id`` still places them)."""

    def __post_init__(self) -> None:
        given = [
            f"--{k}"
            for k in ("teacher_exp", "tckpt", "teacher_hf", "teacher_label_map")
            if getattr(self, k) is not None
        ]
        if given:
            raise UserError(
                f"{', '.join(given)}: the recipe names its teachers (teachers:); a teacher is given there, "
                f"not on the command line"
            )


@dataclass(frozen=True)
class LayerwiseFlags:
    key: ClassVar[str] = "layerwise"
    mu: float = flag(1.0, "weight of the hidden-state loss, mu * sum_j MSE_j / L_s (0: online logits KD only)")
    init_uncovered: bool = flag(
        False,
        "partial LAD: also initialise the student layers not covered by "
        "--gate_indices (the original leaves them random)",
    )
    map_examples: int = flag(
        64, "dev examples averaged for the layer-contribution heat-map at each checkpoint (0: no map)"
    )

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise UserError(f"--mu must be >= 0, got {self.mu}")
        if self.map_examples < 0:
            raise UserError(f"--map_examples must be >= 0, got {self.map_examples}")


# -- using a trained experiment ----------------------------------------------------------------------------
@dataclass(frozen=True)
class InferenceFlags:
    key: ClassVar[str] = "inference"
    batch_size: int = flag(128, "rows per forward pass")

    def __post_init__(self) -> None:
        _positive(self, "batch_size")


@dataclass(frozen=True)
class ReportingFlags:
    """``run_fine_tune_eval.py --report_to``: where its evaluation goes (by default where the run trained)."""

    key: ClassVar[str] = "reporting"
    report_to: tuple[str, ...] | None = flag(
        None,
        "where the evaluation's scalars and final metrics go: tensorboard, mlflow, wandb "
        "(several: space- or comma-separated), all or none (default: where the run reported, "
        "its config.json's report_to)",
        nargs="+",
        metavar="TRACKER",
    )

    def __post_init__(self) -> None:
        if self.report_to is not None:
            report_targets(self.report_to)


@dataclass(frozen=True)
class SweepFlags:
    key: ClassVar[str] = "sweep"
    ckpt: int = flag(0, "first checkpoint step to evaluate (all later ones too)")
    save_predictions: bool = flag(False, "write per-example probabilities and predictions for every checkpoint")


@dataclass(frozen=True)
class CheckpointFlags:
    key: ClassVar[str] = "checkpoint"
    ckpt: str | None = flag(
        None,
        "checkpoint: a step, 'last' (the newest checkpoint; the default) or 'best' (the best "
        "on --select_on by the experiment's --metric_for_best, else its task's main metric, "
        "from run_fine_tune_eval.py's evaluation of that split)",
    )
    select_on: str | None = flag(
        None,
        "split whose evaluation chooses --ckpt best (default: the task's dev split, e.g. val "
        "for SuperGLUE tasks, dev for GLUE tasks, dev_matched for mnli)",
    )


PREDICTION_FORMATS = (".csv", ".tsv", ".jsonl")  # --predict_file and --out: the format from the extension


@dataclass(frozen=True)
class PredictFileFlags:
    """``generate_test_prediction.py`` on a file of your own rows instead of a split (doc/deploy.md)."""

    key: ClassVar[str] = "prediction"
    predict_file: str | None = flag(
        None,
        "predict the rows of this .csv, .tsv or .jsonl file (the task's text columns, its "
        "id column if it has one) instead of a split: one line per row, in order, with "
        "the predicted label and each class's probability (a regression task: the "
        "score), written beside it as <stem>.predictions.<ext>",
    )
    out: str | None = flag(
        None, "with --predict_file: the file to write instead (.csv, .tsv or .jsonl: the format from its extension)"
    )

    def __post_init__(self) -> None:
        if self.out is not None and self.predict_file is None:
            raise UserError(
                "--out goes with --predict_file (a split's predictions are the task's submission file, "
                "written in the experiment folder)"
            )


@dataclass(frozen=True)
class ForeignTeacherFlags:
    """``run_fine_tune_gen_logits.py`` from a teacher fine-tuned elsewhere."""

    key: ClassVar[str] = "foreign"
    teacher_hf: str | None = flag(
        None,
        "write the logits of a fine-tuned Hugging Face sequence classifier (folder or hub "
        "name, of --model's family) instead of an experiment's checkpoint; the data set is "
        "named {experiment}_{model}_{task}; give --max_seq_len",
    )
    teacher_label_map: str | None = flag(
        None,
        "with --teacher_hf: the teacher's output index of each of the task's labels, "
        "in the task's order, comma-separated (e.g. 2,1,0)",
    )
    max_seq_len: int | None = flag(None, "with --teacher_hf: maximum tokens per (text, text_pair)")

    def __post_init__(self) -> None:
        _positive(self, "max_seq_len")
        if self.teacher_hf is None and (self.teacher_label_map is not None or self.max_seq_len is not None):
            raise UserError(
                "--teacher_label_map and --max_seq_len go with --teacher_hf (an experiment's checkpoint "
                "brings its own labels and max_seq_len)"
            )
        if self.teacher_hf is not None and self.max_seq_len is None:
            raise UserError(
                f"--teacher_hf {self.teacher_hf!r}: give --max_seq_len (a teacher fine-tuned elsewhere records none)"
            )


@dataclass(frozen=True)
class ExportFlags:
    key: ClassVar[str] = "export"
    out: str | None = flag(
        None, "output folder (default: <experiment folder>/hf-model-<step>, or onnx-model-<step> with --format onnx)"
    )
    format: str = flag(
        "hf",
        "hf: a Hugging Face model folder (the default); onnx: an ONNX model (dynamic batch and "
        "sequence axes) checked against PyTorch's logits on the task's dev rows",
        choices=("hf", "onnx"),
    )
    quantize: str | None = flag(
        None,
        "with --format onnx: also write an ONNX Runtime dynamically quantized model "
        "(int8), with its dev metrics next to the fp32 one's",
        choices=("int8",),
    )

    def __post_init__(self) -> None:
        if self.quantize and self.format != "onnx":
            raise UserError(f"--quantize {self.quantize} needs --format onnx")


@dataclass(frozen=True)
class ResultsFlags:
    key: ClassVar[str] = "results"
    task: str = flag(
        None,
        "task: " + " ".join(TASK_NAMES) + " (GLUE's and SuperGLUE's), or NAME for a task of "
        "your own, <data_root>/NAME/task.json",
        required=True,
    )
    exp_root: str | None = flag(
        None, "experiment root (default: env FT_EXP_ROOT, else <repo>/data/fine_tune_experiment)"
    )
    data_root: str | None = flag(
        None, "data root, where tasks of your own are defined (default: env FT_DATA_ROOT, else <repo>/data/fine_tune)"
    )
    experiments: str | None = flag(
        None, "comma-separated globs of experiment folders or names (default: every evaluated one)"
    )
    splits: str | None = flag(None, "comma-separated reported splits (default: every evaluated labelled split)")
    rule: str = flag(
        "best",
        "checkpoint rule: best (best on --select_on, by default on the reported split itself: "
        "the original's rule) or last",
        choices=("best", "last"),
    )
    select_on: str | None = flag(
        None,
        "split that chooses the checkpoint for every reported split (e.g. the task's dev "
        "split: val for SuperGLUE tasks, dev for GLUE tasks)",
    )
    compare: tuple[str, ...] | None = flag(
        None, "two experiment folders A B: paired bootstrap of the difference of their main metric", nargs=2
    )
    compare_split: str | None = flag(
        None, "split of --compare (default: the task's dev split, e.g. val for SuperGLUE tasks, dev for GLUE tasks)"
    )
    resamples: int = flag(10000, "bootstrap resamples")
    bootstrap_seed: int = flag(0, "bootstrap random seed")
    out: str | None = flag(
        None,
        "markdown file to write (default: <exp_root>/results-<task>.md); the CSV and JSON of the "
        "same table are written beside it (.csv, .json); a file name, not a folder",
    )
    commands: bool = flag(False, "also print each row's exact command (each run's, from its config.json)")
    plot: bool = flag(
        False,
        "also draw the students' main metric against parameters and against inference "
        "examples/s (teacher and Pareto front marked) as <out>-pareto.png, its data as .json",
    )
    curves: str | None = flag(
        None,
        "comma-separated globs of experiments whose learning curves (loss and evaluation metric "
        "vs step, from their TensorBoard logs) to draw as <out>-curves.png, its data as .json",
    )
    overwrite: bool = flag(
        False,
        "replace existing files at the output paths that results_table.py did not write (or that were changed since)",
    )
    columns: str | None = flag(
        None,
        "comma-separated columns the markdown shows, in that order (default: experiment, "
        "method, model, teacher, each split's metrics and checkpoint, params, params_ratio, "
        "speed, differs, less columns empty in every row; 'default' names that set); 'list' prints every name; the CSV and "
        "JSON keep every field",
    )

    def __post_init__(self) -> None:
        _positive(self, "resamples")
        if not 0 <= self.bootstrap_seed < 2**32:
            raise UserError(f"--bootstrap_seed must lie in [0, 2^32), got {self.bootstrap_seed}")


@dataclass(frozen=True)
class SubmissionFlags:
    key: ClassVar[str] = "submission"
    benchmark: str = flag(
        None, "the benchmark whose server takes the zip", required=True, choices=("glue", "superglue")
    )
    exp_root: str | None = flag(
        None, "experiment root (default: env FT_EXP_ROOT, else <repo>/data/fine_tune_experiment)"
    )
    use: tuple[str, ...] | None = flag(
        None,
        "TASK=EXPERIMENT_FOLDER: take that task's file from this experiment (default: the "
        "experiment holding it with the best main metric on the task's dev split)",
        nargs="+",
    )
    out: str | None = flag(
        None, "the zip to write (default: <exp_root>/<benchmark>-submission.zip); a file name, not a folder"
    )
    data_root: str | None = flag(
        None,
        "data root: each file is checked to predict every row its split holds there now "
        "(default: env FT_DATA_ROOT, else <repo>/data/fine_tune; a split not there is not "
        "checked)",
    )
    overwrite: bool = flag(
        False, "replace an existing --out zip that make_submission.py did not write (or that was changed since)"
    )


# Training scripts' groups (their union of fields is config.json's record)
TRAINING = (ClassifierFlags, OptimiserFlags, BatchingFlags, RunFlags, SpeedFlags, DeviceFlags, PathFlags)
FINE_TUNE = (ExperimentFlags, PretrainedFlags, *TRAINING)
OFFLINE_DISTILL = (DistilExperimentFlags, StudentFlags, DistilFlags, DistilClassifierFlags, *TRAINING[1:])
LAYERWISE = (
    LayerwiseExperimentFlags,
    TeacherFlags,
    StudentFlags,
    LayerwiseDistilFlags,
    LayerwiseFlags,
    LayerwiseClassifierFlags,
    OptimiserFlags,
    LayerwiseBatchingFlags,
    RunFlags,
    SpeedFlags,
    DeviceFlags,
    PathFlags,
)
# Scripts that use a trained experiment
EVAL = (EvalExperimentFlags, SweepFlags, InferenceFlags, DeviceFlags, PathFlags, ReportingFlags)
GEN_LOGITS = (LogitsExperimentFlags, CheckpointFlags, ForeignTeacherFlags, InferenceFlags, DeviceFlags, PathFlags)
PREDICT = (PredictionExperimentFlags, CheckpointFlags, InferenceFlags, DeviceFlags, PathFlags, PredictFileFlags)
EXPORT = (ExportExperimentFlags, CheckpointFlags, ExportFlags, PathFlags)


class FlagGroup(Protocol):
    """What every flag group class is: a dataclass (its fields are the flags) with the key it is found under in
    :class:`Flags` and in ``MethodSettings``."""

    key: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Any]]


G = TypeVar("G", bound=FlagGroup)


def needed(value: T | None, flag: str) -> T:
    """A flag's value where the run needs one: None (not given and not resolved, e.g. a ``--config`` file holding null)
    is refused in one line naming the flag."""
    if value is None:
        raise UserError(f"{flag}: give a value (none was given, and none could be resolved)")
    return value


def find_group(groups: Mapping[str, object], cls: type[G]) -> G:
    """The group of class ``cls`` in ``groups`` (by its ``key``), typed; a missing one, or one of another class under
    that key, raises AttributeError naming the groups there are."""
    value = groups.get(cls.key)
    if not isinstance(value, cls):
        raise AttributeError(f"no flag group {cls.__name__} (groups: {', '.join(groups)})")
    return value


class Flags:
    """The parsed flags of one script: one frozen group instance per group key (``flags.optimiser``).

    The groups of this module are typed attributes (``flags.batching`` is a :class:`BatchingFlags`; a script's
    subclass, e.g. :class:`LayerwiseBatchingFlags`, is one); a group defined elsewhere (a method's, beside it) or a
    subclass's own fields are read with :meth:`group`, which checks the class. Reading a group the script does not
    compose raises AttributeError: ask :meth:`has` first."""

    if TYPE_CHECKING:  # what __getattr__ returns, by key, for the type checker
        experiment: ExperimentFlags
        paths: PathFlags
        device: DeviceFlags
        classifier: ClassifierFlags
        optimiser: OptimiserFlags
        batching: BatchingFlags
        run: RunFlags
        speed: SpeedFlags
        pretrained: PretrainedFlags
        student: StudentFlags
        distil: DistilFlags
        teacher: TeacherFlags
        layerwise: LayerwiseFlags
        inference: InferenceFlags
        reporting: ReportingFlags
        sweep: SweepFlags
        checkpoint: CheckpointFlags
        prediction: PredictFileFlags
        foreign: ForeignTeacherFlags
        export: ExportFlags
        results: ResultsFlags
        submission: SubmissionFlags
        rerun: ConfigSource

    _groups: dict[str, Any]

    def __init__(self, groups: dict[str, Any]):
        object.__setattr__(self, "_groups", dict(groups))

    if not TYPE_CHECKING:  # the type checker reads the attributes above

        def __getattr__(self, key: str) -> Any:
            try:
                return self._groups[key]
            except KeyError:
                raise AttributeError(f"no flag group {key!r} (groups: {', '.join(self._groups)})") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Flags are read-only: make a new one with replace()")

    def group(self, cls: type[G]) -> G:
        """The group of class ``cls`` (found by its ``key``): ``flags.group(PkdFlags)``; a script's subclass of it is
        one. A group the script does not compose, or one of another class under that key, raises AttributeError."""
        return find_group(self._groups, cls)

    def has(self, key: str) -> bool:
        return key in self._groups

    def replace(self, **changes: Any) -> Flags:
        """A new :class:`Flags` with fields of groups changed: ``replace(batching={"max_seq_len": 128})``."""
        groups = dict(self._groups)
        for key, fields in changes.items():
            groups[key] = dataclasses.replace(groups[key], **fields)
        return Flags(groups)

    def record(self) -> dict[str, Any]:
        """Every flag by name, flat: the fields of ``config.json``, as it holds them (a tuple default, e.g.
        ``--report_to``'s, as the list JSON makes of it and a command line gives)."""
        out: dict[str, Any] = {}
        for group in self._groups.values():
            for f in dataclasses.fields(group):
                value = getattr(group, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class ConfigSource:
    """Not flags: where the flags of a run started with ``--config`` came from, in its ``Flags`` (key ``rerun``) so
    that ``Flags.record()`` and so its config.json hold them (config.RERUN_FIELDS, runtime fields)."""

    key: ClassVar[str] = "rerun"
    config_from: str  # the config file, absolute
    overrides: dict[str, Any]  # flags given on the command line whose value differs from the file's


# A run's own config.json read by a script that trains nothing (evaluation, logits, predictions, export, tables):
# the fields that name the experiment and where and how it runs; the run's other flags (its training split,
# batch size, max_seq_len...) mean something else there. Fields no training run records fill such a script's
# flags of the same name (a config.json written by hand).
IDENTITY_FIELDS = frozenset(
    {"experiment", "model", "task", "data_root", "exp_root", "device_id", "num_gpu", "amp", "amp_dtype"}
)
# An instruction to one invocation, never taken from a file: give it on the command line.
NOT_FROM_CONFIG = frozenset({"overwrite"})
