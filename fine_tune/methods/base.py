"""The method interface the training engine drives (:class:`fine_tune.engine.protocol.TrainingMethod`), and what a
method tells the workflow that builds it. The protocol types a method reads and returns (``ModelOutputs``,
``ExtraParameters``, ``TeacherShape``) are the engine's (:mod:`fine_tune.engine.protocol`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch

from ..engine.optim import OptimiserSettings
from ..engine.protocol import PLAIN_RECORD, ExtraParameters, LayerRecord, ModelOutputs, TeacherShape
from ..settings import FlagGroup, G, find_group

if TYPE_CHECKING:  # for the annotations only (importing transformers takes seconds)
    from transformers import PretrainedConfig

    from ..models.projection import PretrainedProjection
    from ..recipes.format import Recipe

V = TypeVar("V")

# the two models whose layers a method reads (Method.recorded_layers)
ROLES = ("student", "teacher")


@dataclass(frozen=True)
class StudentShape:
    """The student's layers, width and heads, as the run plan resolved them (a pretrained student's own)."""

    num_layers: int
    hidden_size: int
    num_heads: int


@dataclass(frozen=True)
class MethodSettings:
    """What a method is built from (:meth:`Method.build`), resolved once by the run plan
    (``fine_tune/plan/training.method_settings``): the settings groups it reads, by key (its own ``flag_groups``,
    and the common ``distil`` and ``layerwise`` groups of the distillation scripts: ``settings.group(DistilFlags)``), and the
    facts of the run that are not flags."""

    groups: Mapping[str, Any]
    num_class: int
    regression: bool = False  # the task's (Task.regression): one output, a score
    student: StudentShape | None = None
    teacher: TeacherShape | None = None
    padding: str = "dynamic"  # --padding
    max_seq_len: int = 512
    optimiser: OptimiserSettings | None = None  # the student's (a width projection learns with it)
    # a run started before a fidelity fix, resumed: the old rule of each field of Method.record() its config.json
    # lacks (fine_tune.config.LEGACY_FIELDS), which the method keeps
    legacy: Mapping[str, Any] = field(default_factory=dict)
    # a pretrained student's own projection, found in its weights file under the method's projection_weights name
    # (models/projection.PretrainedProjection; None: --student_ptrain_ver holds none, or no pretrained student)
    student_projection: PretrainedProjection | None = None
    # a distillation recipe's several teachers: each one's shape by name, in the recipe's order (empty: one teacher,
    # ``teacher``); and the recipe the plan read (fine_tune.recipes.format.Recipe; None: none, or a method built
    # outside a plan, which reads its --recipe file)
    teachers: Mapping[str, TeacherShape] = field(default_factory=dict)
    recipe: Recipe | None = None
    # a recipe's method: NAME, built by the plan from its flags: the method the recipe's terms are added to
    base: Method | None = None

    def need_student(self) -> StudentShape:
        """:attr:`student`, which a method that distils into a student's layers is built with (the run plan resolves
        it from the student's flags); ValueError without it."""
        return _given(self.student, "the student's shape (MethodSettings.student)")

    def need_teacher(self) -> TeacherShape:
        """:attr:`teacher`, which a method that reads the teacher's layers is built with; ValueError without it."""
        return _given(self.teacher, "the teacher's shape (MethodSettings.teacher)")

    def need_optimiser(self) -> OptimiserSettings:
        """:attr:`optimiser`, which a method with parameters of its own (LAD's gates) derives theirs from; ValueError
        without it."""
        return _given(self.optimiser, "the student's optimiser (MethodSettings.optimiser)")

    def group(self, cls: type[G]) -> G:
        """The settings group of class ``cls``, typed: ``settings.group(PkdFlags).pkd_loss``; one the run's script
        does not compose raises AttributeError."""
        return find_group(self.groups, cls)


def _given(value: V | None, what: str) -> V:
    """A fact of the run a method is built with (:class:`MethodSettings`); ValueError naming it when the settings
    lack it (a method built outside the run plan)."""
    if value is None:
        raise ValueError(f"the method is built with {what}; none was given")
    return value


class Method:
    """Base class: a method turns (batch, student outputs, teacher outputs) into named loss parts. It never
    touches an optimiser or a file; the engine does.

    The teacher's outputs arrive with its logits on the student's device and its hidden states (and attention
    mask) on the teacher's device (``--tdevice_id``): a method moves the hidden states it reads, once, to where
    it computes (``.to(student.hidden_states[0].device)``; a no-op on one device).

    ``losses`` returns a dict of scalar tensors; key ``"loss"`` is what is back-propagated, every other key
    is logged as ``{task}/{dataset}/{model}/{key}``. A method is registered under its ``name`` in
    :mod:`fine_tune.methods.registry` and built complete by :meth:`build`.
    """

    name: ClassVar[str] = "method"
    # the method's own flag groups (defined beside it, on fine_tune.settings' helpers), beyond the ones every
    # script of its kind has (fine_tune.settings.LAYERWISE...)
    flag_groups: ClassVar[tuple[type[FlagGroup], ...]] = ()
    # True: distilled beside a live teacher (``run_distil.py --method NAME``, the layer-wise scripts); False: the
    # fine-tuning and logits-set methods of their own scripts
    online: ClassVar[bool] = False
    # the caption of the layer-contribution heat-map drawn at each checkpoint; None: no map
    map_caption: ClassVar[str | None] = None
    # whether the training split must have gold labels
    needs_labels: ClassVar[bool] = True
    needs_hidden_states = False
    uses_teacher = False
    # the name under which a pretrained student's weights may hold this method's projection, which then starts from
    # it (TinyBERT: "fit_dense", its released student's W_h); the run plan looks it up (MethodSettings.student_projection)
    projection_weights: ClassVar[str | None] = None
    # False when some student parameter gets no gradient from the losses (hidden losses only: the pooler and
    # classifier); DistributedDataParallel is then told to look for such parameters (engine/distributed.wrap_ddp)
    every_parameter_learns = True
    # True when no loss term looks at padding positions, so the student may run the padding-free forward
    # (models/padding_free.py); False for the original's full-sequence hidden MSE and the fixed-length LAD gate
    ignores_padding = True
    # how the method trains, beyond its losses (the run plan resolves them into the engine's settings): the
    # learning-rate schedule of the student's optimiser and of the method's own parameter sets
    # (engine/optim.SCHEDULES: "linear" warmup/decay, or "constant"), and whether each epoch trains only full
    # micro-batches (its incomplete last one skipped, TinyBERT's released loop)
    schedule = "linear"
    drop_last = False
    # True: the student's layers must divide the teacher's (the methods that skip L_t / L_s teacher layers: LAD-NO,
    # partial LAD); checked by the run plan before anything is written
    needs_layer_multiple: ClassVar[bool] = False

    @classmethod
    def build(cls, settings: MethodSettings) -> Method:
        """The method, complete, from its settings and the run's resolved facts; bad values are refused here,
        before anything is written."""
        return cls()

    def check_models(self, teacher_config: PretrainedConfig, student_family: str) -> None:
        """Refuse, before anything is written, a teacher (its Hugging Face config) or student family the method
        cannot read (e.g. an attention it cannot recompute)."""

    def check_training_rows(self, rows: int, micro_batch: int, source: str) -> None:
        """Refuse, before anything is written, a training set of ``rows`` rows the method would not train on in
        micro-batches of ``micro_batch`` rows (a method with :attr:`drop_last`: fewer rows than one micro-batch, in
        words that name its flag); ``source`` names the data set in the error. Every row trains by default."""

    def recorded_layers(self, role: str) -> LayerRecord:
        """The layers of the ``role`` model (one of :data:`ROLES`) whose outputs the losses read: its training forward
        keeps only these for the step (models/padding_free.training_forwards), and reading another one fails loudly
        (engine/protocol.RecordedLayers). Resolved when the method is built. Default: every hidden state (when
        :attr:`needs_hidden_states`), no attention inputs."""
        return PLAIN_RECORD

    @property
    def reads_attention(self) -> bool:
        """Whether the losses read some layer's query/key/value projections (ModelOutputs.attention_inputs): the
        run's forwards then record them (TinyBERT, MiniLM); no other method pays for it."""
        return any(self.recorded_layers(role).reads_attention for role in ROLES)

    def record(self) -> dict[str, Any]:
        """Fields this method adds to ``config.json`` (what it computes that its flags do not say)."""
        return {}

    def init_pairs(self, init_range: tuple[int, int, int] | None, pretrained_student: bool) -> list[tuple[int, int]]:
        """(student layer, pretrained teacher layer) pairs to initialise the student from, 1-based; ``init_range``:
        ``--init_start/--init_end/--init_step`` when given; ``pretrained_student``: ``--student_ptrain_ver``."""
        return []

    def create_parameters(self, device: torch.device | None, student_device: torch.device | None = None) -> None:
        """Create the method's own trainable modules (after the seed is set: reproducible): on ``device`` (e.g.
        LAD's gates, ``--gate_device_id``) or, for what works beside the student (a width projection), on
        ``student_device``."""

    def extra_parameters(self) -> list[ExtraParameters]:
        return []

    def checkpoint_state(self) -> dict[str, dict[str, Any]]:
        """Extra state saved beside each ``model-{step}.pt``: file stem -> state_dict (``{stem}-{step}.pt``)."""
        return {}

    def load_checkpoint_state(self, states: dict[str, dict[str, Any]]) -> None:
        """Restore what :meth:`checkpoint_state` returned (resume)."""

    def train(self, mode: bool = True) -> None:
        """Switch the method's own modules (e.g. gates) between training and evaluation mode."""

    def notes(self) -> list[str]:
        """What the method made of the run's facts that the user should know (e.g. where a projection starts from),
        printed as notes when the run starts."""
        return []

    def describe_mapping(self) -> str:
        """The student/teacher layer mapping in words ("S1<-A2, ..."), or "" when there is none."""
        return ""

    @property
    def needs_projection(self) -> bool:
        """Whether the method learns a width projection (a student narrower than the teacher: models/projection.py);
        the methods that do are :class:`~fine_tune.methods.layerwise.WidthProjecting`'s."""
        return False

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray | None:
        """The [L_s, L_t] layer-contribution matrix of one batch, drawn at each checkpoint by a method with a
        :attr:`map_caption` (the layer-wise methods'); None: the method draws none."""
        return None

    def begin_step(self, step: int) -> None:
        """Called by the engine before each optimizer step's micro-batches with the optimizer steps already taken
        (0 first; a resumed run: the step it resumes at), for losses that change with the step (a recipe's weight
        and temperature schedules). Nothing by default."""

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
