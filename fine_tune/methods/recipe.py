"""A distillation recipe as a method: the loss is the weighted sum of the terms a recipe file lists
(``run_distil.py --recipe FILE``; the format: :mod:`fine_tune.recipes.format`, doc/methods.md "Recipes")::

    L = sum_i w_i * term_i(student, teacher)

each term one feature compared by one loss over its layer pairs (:mod:`fine_tune.methods.terms`). The terms that
the built-in methods are made of are computed by the same functions, in the same order of additions, so a recipe
that lists a built-in method's losses trains the same student bit for bit: the cross-entropy with the gold labels
and the soft loss of :func:`~fine_tune.methods.logits_kd.logits_kd_loss` (Hinton et al., 2015), and the layer-wise
hidden MSE ``w * (1/|J|) sum_j MSE(H_s[j], H_t[t_j])`` of :func:`~fine_tune.methods.layerwise.hidden_mse_loss`
(BERT-PKD, Sun et al. 2019, as the LAD code computes it), masked under ``--padding dynamic``, over the whole
sequence under ``--padding max_length`` (the original's).

A term's weight and temperature may follow a schedule over the optimizer steps (``{schedule: linear, from, to,
steps}``, held at ``to`` after ``steps``): the engine tells the method each step before its micro-batches
(:meth:`begin_step`), so a resumed run continues the schedule where it stopped.

Several teachers (the recipe's ``teachers:``, run as one set by the engine): a term with ``teacher: NAME`` reads that
teacher's features; a logits term without one reads the teachers' weighted mean logits (:func:`weighted_logits`);
every other term names its teacher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..engine.optim import OptimiserSettings
from ..engine.protocol import LayerRecord, ModelOutputs, TeacherShape
from ..errors import UserError
from ..layer_mapping import uniform_layers
from ..models.init import teacher_layer_map
from ..models.projection import PretrainedProjection, WidthProjection
from ..recipes.format import (
    ATTENTION_FEATURES,
    DEFAULT_TEACHER,
    HEAD_MEAN_FEATURES,
    PROJECTION_FEATURES,
    Recipe,
    Term,
    load_recipe,
)
from ..settings import flag
from .base import Method, MethodSettings, StudentShape
from .layerwise import WidthProjecting
from .logits_kd import check_temperature
from .terms import Projection, term_loss
from .tinybert import check_recomputable_attention
from .with_terms import MethodWithTerms

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# the features read from the hidden states (those a width projection applies to); ATTENTION_FEATURES: from the
# attention projections
HIDDEN_FEATURES = PROJECTION_FEATURES
# compared over the real tokens whatever --padding says (MiniLM's relations exclude padding keys and query rows in
# either padding); the other token-wise terms are masked under --padding dynamic only
ALWAYS_MASKED = ("attention_probs", "value_relation", "qkv_relation")


@dataclass(frozen=True)
class RecipeFlags:
    key: ClassVar[str] = "recipe"
    recipe: str | None = flag(
        None,
        "distillation recipe file (YAML or JSON): the loss terms, their features, layer pairs "
        "and weights (doc/methods.md, 'Recipes'); its terms replace --hard_weight, --soft_weight, "
        "--softmax_temp and --mu",
    )


# on a regression task (one output, a score) the logits losses are mean squared errors, as the layer-wise
# scripts' (logits_kd_loss with regression): hard_labels ce -> MSE(s, y), logits kl -> MSE(s, t)
REGRESSION_LOSSES = {("hard_labels", "ce"): "mse", ("logits", "kl"): "mse"}


def weighted_logits(logits: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The teachers' logits combined by their recipe weights ``w_k`` (a weighted mean, so the weights' scale leaves
    the temperature's meaning alone), in float32::

        z = sum_k w_k z_k / sum_k w_k

    (TextBrewer's ``MultiTeacherDistiller`` takes the plain mean: every ``w_k`` equal.)"""
    total = sum(weights)
    out = logits[0].float() * (weights[0] / total)
    for z, w in zip(logits[1:], weights[1:]):
        out = out + z.float() * (w / total)
    return out


@dataclass(frozen=True)
class ResolvedTerm:
    """A recipe term with its layer pairs resolved for this student and its teacher ((student, teacher), 0 = the
    embeddings), the teacher it reads (``teacher``: a name of several teachers' set; None: the run's one teacher,
    or for logits the teachers' weighted mean), the two models' head counts, the loss it computes on this task, and
    its weight and temperature at the current step (:meth:`at`)."""

    term: Term
    pairs: tuple[tuple[int, int], ...]
    loss: str
    teacher: str | None = None
    heads: tuple[int, int | None] = (0, 0)  # (the teacher's None: its shape gave none)
    teacher_width: int = 0
    weight: float = 0.0
    temperature: float = 1.0

    def at(self, step: int) -> ResolvedTerm:
        """This term at optimizer step ``step``: its schedules' values."""
        t = self.term
        return replace(
            self,
            weight=t.weight.value_at(step),
            temperature=t.temperature.value_at(step) if t.temperature is not None else 1.0,
        )


def projected(t: ResolvedTerm, student_width: int) -> bool:
    """Whether a term's student hidden states go through the learned projection: a hidden feature with
    ``projection: shared``, or ``auto`` where its teacher is of another width than the student."""
    return t.term.feature in HIDDEN_FEATURES and (
        t.term.projection == "shared" or (t.term.projection == "auto" and t.teacher_width != student_width)
    )


class RecipeKD(WidthProjecting, Method):
    """The method a recipe file describes (module docstring)."""

    name = "recipe"
    online = True
    flag_groups = (RecipeFlags,)
    needs_layer_multiple = False  # layer pairs come from the recipe (rules spread ceil(j L_t / L_s))
    # projection: shared starts from a pretrained student's own fit_dense (TinyBERT's W_h, General TinyBERT's)
    projection_weights = "fit_dense"
    # both widths are known (WidthProjecting's may be None)
    student_width: int
    teacher_width: int

    def __init__(
        self,
        recipe: Recipe,
        terms: list[ResolvedTerm],
        *,
        num_student_layers: int,
        num_teacher_layers: int,
        padding: str,
        regression: bool,
        student_width: int,
        teacher_width: int,
        projection_optimiser: OptimiserSettings | None = None,
        teacher_weights: dict[str, float] | None = None,
    ) -> None:
        """``teacher_width``: the width the projected hidden terms' teachers share (the projection's output);
        ``teacher_weights``: several teachers' weights by name, in order (None: one teacher)."""
        self.recipe, self.terms = recipe, terms
        self.ls, self.lt = num_student_layers, num_teacher_layers
        self.padding, self.regression = padding, regression
        self.student_width, self.teacher_width = student_width, teacher_width
        self.teacher_weights = teacher_weights
        # how it trains (the recipe's training:), the run plan's to resolve; a projection learns on the same schedule
        self.schedule = recipe.training.schedule
        self.drop_last = recipe.training.incomplete_batches == "skip"
        if projection_optimiser is not None:
            projection_optimiser = replace(projection_optimiser, schedule=self.schedule)
        self.projection_optimiser = projection_optimiser
        self.projection: WidthProjection | None = None
        # a pretrained student's fit_dense (build), used by projection: shared
        self.found_projection: PretrainedProjection | None = None
        # projection: shared, TinyBERT's W_h: one map for every layer and the embeddings, at any widths
        self.shared_projection = any(t.term.projection == "shared" for t in terms)
        features = {t.term.feature for t in terms}
        self.needs_hidden_states = bool(features & set(HIDDEN_FEATURES))
        self.uses_teacher = any(t.term.feature != "hard_labels" for t in terms)
        self.every_parameter_learns = bool(features & {"logits", "hard_labels"})
        self.ignores_padding = padding == "dynamic" or not (features - {"logits", "hard_labels", *ALWAYS_MASKED})
        self.records = {role: self._record(role) for role in ("student", "teacher")}
        self.current = list(terms)  # at step 0 (begin_step: at the step being taken)

    @classmethod
    def build(cls, settings: MethodSettings) -> RecipeKD | MethodWithTerms:
        """The recipe's terms as a method; with ``method: NAME`` (``settings.base``, the built-in method the plan
        built from its flags) that method with the terms added."""
        path = settings.group(RecipeFlags).recipe
        recipe = settings.recipe
        if recipe is None:
            if path is None:
                raise UserError("--recipe FILE is required: the recipe whose loss terms the student learns from")
            recipe = load_recipe(Path(path))
        where = f"recipe {recipe.path or path}"
        if recipe.method is not None and settings.base is None:
            raise ValueError(f"{where}: method: {recipe.method}: the run plan builds the method the terms add to")
        s = settings.need_student()
        # the teachers by name (a recipe's several, or the run's one: DEFAULT_TEACHER), the first the primary
        several = len(recipe.teachers) > 1
        if several:
            shapes: dict[str, TeacherShape] = dict(settings.teachers)
            if list(shapes) != [t.name for t in recipe.teachers]:
                raise ValueError(
                    f"{where}: the plan opened teachers {list(shapes)}, the recipe names "
                    f"{[t.name for t in recipe.teachers]}"
                )
        else:
            shapes = {recipe.teachers[0].name if recipe.teachers else DEFAULT_TEACHER: settings.need_teacher()}
        terms = [cls._resolve(term, s, shapes, settings.regression, f"{where}: {term.key}") for term in recipe.terms]
        primary = next(iter(shapes.values()))
        widths = {t.teacher_width for t in terms if projected(t, s.hidden_size)}
        if len(widths) > 1:
            raise UserError(
                f"{where}: the projected hidden terms read teachers of widths {sorted(widths)}; one learned "
                f"projection maps the student to one width: project to one teacher's width only"
            )
        method = cls(
            recipe,
            terms,
            num_student_layers=s.num_layers,
            num_teacher_layers=primary.num_layers,
            padding=settings.padding,
            regression=settings.regression,
            student_width=s.hidden_size,
            teacher_width=widths.pop() if widths else primary.hidden_size,
            projection_optimiser=settings.optimiser,
            teacher_weights={t.name: t.weight for t in recipe.teachers} if several else None,
        )
        method._check_widths_and_heads(where)
        method.found_projection = settings.student_projection
        if method.shared_projection and settings.student_projection is not None:  # checked before any write
            settings.student_projection.check(s.hidden_size, method.teacher_width, "the recipe's shared projection")
            method.pretrained_projection = settings.student_projection
        if settings.base is None:
            return method
        method.projection_name = "recipe_projection"  # beside the method's own
        return MethodWithTerms(settings.base, method)

    @staticmethod
    def _resolve(
        term: Term, student: StudentShape, teachers: dict[str, TeacherShape], regression: bool, where: str
    ) -> ResolvedTerm:
        if term.feature == "logits" and term.temperature is not None:
            for value in {term.temperature.start, term.temperature.end}:  # a schedule's values lie between
                check_temperature(regression, value)
        name = term.teacher
        if name is None and len(teachers) > 1 and term.feature not in ("logits", "hard_labels"):
            raise UserError(
                f"{where}: with several teachers a {term.feature} term names its teacher "
                f"(teacher: {' or '.join(teachers)})"
            )
        shape = teachers[name] if name is not None else next(iter(teachers.values()))
        ls, lt = student.num_layers, shape.num_layers
        if term.feature == "embeddings":
            pairs: tuple[tuple[int, int], ...] = ((0, 0),)
        elif term.layers is not None:
            pairs = tuple(term.layers.resolve(ls, lt, f"{where}.layers"))
        else:
            pairs = ()
        loss = REGRESSION_LOSSES.get((term.feature, term.loss), term.loss) if regression else term.loss
        # a named teacher of a set is read from its members; the one teacher (even named) is the run's outputs
        member = name if len(teachers) > 1 else None
        return ResolvedTerm(term, pairs, loss, member, (student.num_heads, shape.num_heads), shape.hidden_size).at(0)

    def _check_widths_and_heads(self, where: str) -> None:
        for t in self.terms:
            term = t.term
            who = f"teacher {t.teacher}" if t.teacher else "teacher"
            if term.feature in HIDDEN_FEATURES and self.student_width != t.teacher_width:
                if term.projection == "none":
                    raise UserError(
                        f"{where}: {term.key}: projection none, but the student's width "
                        f"{self.student_width} differs from the {who}'s {t.teacher_width}"
                    )
                if term.feature == "embeddings" and term.projection != "shared":
                    raise UserError(
                        f"{where}: {term.key}: embeddings of another width than the {who}'s need "
                        f"projection: shared (one map for every layer and the embeddings)"
                    )
            if term.feature in HEAD_MEAN_FEATURES and t.heads[0] != t.heads[1] and not term.head_mean:
                raise UserError(
                    f"{where}: {term.key}: the student has {t.heads[0]} attention heads and "
                    f"the {who} {t.heads[1]}: add head_mean: true to compare head means"
                )

    def check_training_rows(self, rows: int, micro_batch: int, source: str) -> None:
        if self.drop_last and rows < micro_batch:
            raise UserError(
                f"{source}: {rows} rows, fewer than one micro-batch ({micro_batch} rows: --batch_size / "
                f"--accum_step); the recipe {self.recipe.path} skips incomplete batches "
                f"(training.incomplete_batches: skip), so nothing would train: lower --batch_size"
            )

    def notes(self) -> list[str]:
        found = self.found_projection
        if found is None:
            return []
        if self.pretrained_projection is not None:
            return [
                f"the shared projection starts from the pretrained student's {found.prefix}weight/bias in "
                f"{found.file} (TinyBERT's fit_dense), not from N(0, 0.02)"
            ]
        return [f"{found.file} holds a {found.prefix}weight: unused (only projection: shared starts from it)"]

    def check_models(self, teacher_config: PretrainedConfig, student_family: str) -> None:
        """Attention terms recompute attention from the recorded Q, K, V: refused for a family whose attention is
        not recomputable that way (as TinyBERT and MiniLM refuse it)."""
        if any(t.term.feature in ATTENTION_FEATURES for t in self.terms):
            check_recomputable_attention(teacher_config.model_type, student_family, "a recipe with attention terms")

    # -- what the forwards keep --------------------------------------------------------------------------------
    def _record(self, role: str) -> LayerRecord:
        side = 0 if role == "student" else 1
        hidden = {p[side] for t in self.terms if t.term.feature in HIDDEN_FEATURES for p in t.pairs}
        attention = {p[side] for t in self.terms if t.term.feature in ATTENTION_FEATURES for p in t.pairs}
        return LayerRecord(hidden=frozenset(hidden), attention=frozenset(attention))

    def recorded_layers(self, role: str) -> LayerRecord:
        return self.records[role]

    def record(self) -> dict[str, Any]:
        return {"recipe": self.recipe.record()}

    def describe_mapping(self) -> str:
        return "; ".join(
            f"{t.term.name}{f' ({t.teacher})' if t.teacher else ''}: " + ", ".join(f"S{s}<-T{tt}" for s, tt in t.pairs)
            for t in self.terms
            if t.pairs
        )

    def init_pairs(self, init_range: tuple[int, int, int] | None, pretrained_student: bool) -> list[tuple[int, int]]:
        """As every layer-wise method: student layer j <- teacher layer ceil(j L_t / L_s), or
        ``--init_start/--init_end/--init_step``; none for a pretrained student or another width."""
        if init_range is not None:
            return list(enumerate(teacher_layer_map(*init_range, self.ls, self.lt), 1))
        if pretrained_student or self.student_width != self.teacher_width:
            return []
        return list(enumerate(uniform_layers(self.ls, self.lt), 1))

    # -- the width projection ----------------------------------------------------------------------------------
    @property
    def needs_projection(self) -> bool:
        """``auto``: a map per layer where the widths differ; ``shared``: one map at any widths (TinyBERT's)."""
        return any(projected(t, self.student_width) for t in self.terms)

    # -- the loss ------------------------------------------------------------------------------------------------
    def _projector(self, t: ResolvedTerm) -> Projection | None:
        """``project(layer, hidden)`` for :func:`~fine_tune.methods.terms.term_loss`: the student's layer in the
        teacher's width (None: no projection for this term)."""
        if self.projection is None or not projected(t, self.student_width):
            return None
        if self.projection.shared:  # the embeddings (layer 0) too
            return self.projection
        projection = self.projection  # (narrowed: not None)
        return lambda layer, h: projection(layer, h) if layer > 0 else h

    def begin_step(self, step: int) -> None:
        """The schedules' weights and temperatures for optimizer step ``step`` (0-based: the steps taken)."""
        self.current = [t.at(step) for t in self.terms]

    def _sources(self, teacher: ModelOutputs | None) -> dict[str | None, ModelOutputs | None]:
        """The teacher outputs each term reads, by :attr:`ResolvedTerm.teacher`: the run's (None), or of several
        teachers each member's by name and, under None, their weighted mean logits (:func:`weighted_logits`)."""
        if self.teacher_weights is None or teacher is None:
            return {None: teacher}
        members = teacher.members
        assert members is not None  # several teachers' outputs hold each one's (models/teacher_set.TeacherSet)
        combined = weighted_logits(
            [members[n].logits for n in self.teacher_weights], list(self.teacher_weights.values())
        )
        sources: dict[str | None, ModelOutputs | None] = {
            None: ModelOutputs(logits=combined, attention_mask=teacher.attention_mask)
        }
        sources.update(members.items())  # (pairs: a dict[str, ...] is no dict[str | None, ...])
        return sources

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]:
        mask = student.attention_mask if self.padding == "dynamic" else None
        total = student.logits.float().new_zeros(())
        parts: dict[str, torch.Tensor] = {}

        sources = self._sources(teacher)

        def loss_of(t: ResolvedTerm, weight: float) -> torch.Tensor:
            term = t.term
            return term_loss(
                term.feature,
                t.loss,
                student,
                sources[t.teacher],
                pairs=t.pairs,
                labels=batch.get("labels"),
                temperature=t.temperature,
                mask=student.attention_mask if term.feature in ALWAYS_MASKED else mask,
                num_heads=t.heads,
                relation_heads=term.relation_heads,
                head_mean=term.head_mean,
                project=self._projector(t),
                weight=weight,
                reduction=term.reduction,
            )

        for group, grouped in groupby(self.current, key=lambda t: t.term.group):
            members = list(grouped)
            if group is None:  # each term weighted where the built-in methods weigh theirs (term_loss)
                for t in members:
                    contribution = loss_of(t, t.weight)
                    parts[t.term.name] = contribution
                    total = total + contribution
            else:  # a sum: its members' losses added in order, then weighted once (MiniLM's mu * (L_AT + L_VR))
                summed = parts[members[0].term.name] = loss_of(members[0], 1.0)  # members logged unweighted
                for t in members[1:]:
                    parts[t.term.name] = loss_of(t, 1.0)
                    summed = summed + parts[t.term.name]
                parts[group] = summed * members[0].weight
                total = total + parts[group]
        for t in self.current:
            for what, schedule, value in (
                ("weight", t.term.weight, t.weight),
                ("temperature", t.term.temperature, t.temperature),
            ):
                if schedule is not None and schedule.kind != "constant":  # TensorBoard shows the schedule
                    parts[f"{t.term.group or t.term.name}_{what}"] = total.new_tensor(value)
        parts["loss"] = total
        return parts
