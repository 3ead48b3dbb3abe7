"""Online distillation with a layer-wise hidden-state loss: the base every layer-wise method shares.

A layer-wise method names, for every matched student layer j, the target its hidden states should match
(a raw teacher layer, a LAD aggregation, an ALP-KD attention mixture). The loss is the weighted logits loss
plus the hidden loss of the LAD code base (Lin et al., Sensors 2023)::

    L = hard_weight * CE(s, y) + soft_weight * T^2 * KL(softmax(t / T) || softmax(s / T))
        + mu * (1 / |J|) * sum_{j in J} MSE(H_s[j], target_j)

MSE over every token and dimension (padding included), hidden states without the embedding output, J the
matched student layers (all L_s of them for every method of the original). With ``mu = 0`` no hidden state
is computed and the method is online logits KD. A student of another width than the teacher's compares
``W_j H_s[j]`` (a learned projection per matched layer, :mod:`fine_tune.models.projection`) in the teacher's
width instead of ``H_s[j]``, in every method.

``padding="dynamic"`` (``--padding dynamic``; a deviation, off by default) pads each batch to its longest
member and replaces each MSE by its masked mean over the real (non-padding) tokens and every dimension::

    MSE_M(a, b) = sum_{i, s} m[i, s] * sum_d (a[i, s, d] - b[i, s, d])^2 / (D * sum_{i, s} m[i, s])

(m the attention mask), with the same ``mu / |J|`` weighting; [CLS]-only comparisons ([B, D]) are unchanged.
The loss then no longer depends on how far a batch is padded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.optim import OptimiserSettings
from ..engine.protocol import ExtraParameters, ModelOutputs
from ..errors import UserError
from ..layer_mapping import uniform_layers
from ..models.init import teacher_layer_map
from ..models.projection import PretrainedProjection, WidthProjection
from ..settings import DistilFlags, LayerwiseFlags
from .base import Method, MethodSettings
from .logits_kd import check_temperature, logits_kd_loss

PADDINGS = ("max_length", "dynamic")


@dataclass
class HiddenPair:
    """Student layer ``layer`` (1-based) should match ``target``; ``student`` is its hidden state (or the
    part of it the method compares, e.g. the [CLS] vector)."""

    layer: int
    student: torch.Tensor
    target: torch.Tensor


def hidden_mse_loss(
    pairs: list[HiddenPair], mu: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    r"""``mu * (1/|J|) * sum_j MSE(student_j, target_j)`` in fp32; also each layer's term
    ``mu * MSE_j / |J|`` (the terms sum to the total). With ``mask`` [B, S] (``--padding dynamic``) each
    token-wise MSE ([B, S, D] pairs) is the masked mean over the real tokens and every dimension."""

    def mse(p: HiddenPair) -> torch.Tensor:
        if mask is None or p.student.dim() < 3:
            return F.mse_loss(p.student.float(), p.target.float())
        return masked_mean((p.student.float() - p.target.float()).pow(2), mask.to(p.student.device))

    per = {p.layer: mse(p) * (mu / len(pairs)) for p in pairs}
    return torch.stack(list(per.values())).sum(), per


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [B, S, ...] over the non-padding positions (mask [B, S]) and every trailing dimension."""
    x = x.float().reshape(x.shape[0], x.shape[1], -1).mean(-1)
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1)


def attention_mask_of(outputs: ModelOutputs) -> torch.Tensor:
    """``outputs.attention_mask``, which the models' forwards always hand on (models/forward.py); for the losses that
    read it whatever the padding (a heat-map's real tokens) or under ``--padding dynamic``."""
    assert outputs.attention_mask is not None, "the forward handed on no attention mask"
    return outputs.attention_mask


class WidthProjecting:
    """A method's learned width projection as its own parameters (:class:`WidthProjection`): made when the method's
    ``needs_projection`` says so (a student of another width than the teacher's), on the student's device, trained
    with ``projection_optimiser`` (the student's settings), saved beside each checkpoint (``projection-{step}.pt``)
    and restored on resume. The method sets ``student_width``, ``teacher_width``, ``ls`` (the student's layers),
    ``projection_optimiser`` and ``projection = None``."""

    # one projection shared by every layer (TinyBERT's W_h) or one per matched student layer
    shared_projection = False
    # its parameter set's and its files' name (projection-{step}.pt); a recipe's terms added to a method that has its
    # own projection: recipe_projection
    projection_name = "projection"
    # a pretrained student's own map (models/projection.PretrainedProjection, checked by the method that sets it):
    # the shared projection starts from it (TinyBERT's W_h from General TinyBERT's fit_dense)
    pretrained_projection: PretrainedProjection | None = None
    # what the method sets (class docstring)
    student_width: int | None
    teacher_width: int | None
    ls: int
    projection_optimiser: OptimiserSettings | None
    projection: WidthProjection | None

    @property
    def needs_projection(self) -> bool:
        """Whether the method has a width projection: the method's own rule."""
        raise NotImplementedError

    def create_parameters(self, device: torch.device | None, student_device: torch.device | None = None) -> None:
        """The width projection (when ``needs_projection``), on the student's device."""
        if self.needs_projection:
            if self.student_width is None or self.teacher_width is None:
                raise ValueError("a width projection is made between the student's and the teacher's widths: give both")
            self.projection = WidthProjection(self.student_width, self.teacher_width, self.ls, self.shared_projection)
            if self.pretrained_projection is not None:  # drawn first all the same: the seeded stream that follows
                # does not depend on it (cast: WidthProjection's maps are Linear layers)
                self.pretrained_projection.copy_to(cast(torch.nn.Linear, self.projection.maps[0]))
            if student_device is not None:
                self.projection.to(student_device)

    def extra_parameters(self) -> list[ExtraParameters]:
        if self.projection is None:
            return []
        if self.projection_optimiser is None:
            raise ValueError("a width projection learns with projection_optimiser: the method was built without one")
        return [
            ExtraParameters(name=self.projection_name, modules=[self.projection], optimiser=self.projection_optimiser)
        ]

    def checkpoint_state(self) -> dict[str, dict[str, Any]]:
        """``projection`` -> its state_dict (``projection-{step}.pt``) when the method has one."""
        return {} if self.projection is None else {self.projection_name: self.projection.state_dict()}

    def load_checkpoint_state(self, states: dict[str, dict[str, Any]]) -> None:
        if self.projection is not None:
            self.projection.load_state_dict(states[self.projection_name])

    def train(self, mode: bool = True) -> None:
        if self.projection is not None:
            self.projection.train(mode)


class LayerwiseKD(WidthProjecting, Method):
    """Online logits KD plus a hidden loss over the pairs :meth:`hidden_pairs` returns. Subclasses define
    ``hidden_pairs`` (and, for a heat-map, ``layer_map``)."""

    name = "online_kd"
    online = True

    # whether the method pairs layers by skipping L_t / L_s teacher layers exactly (LAD-NO's pairs, partial LAD's
    # raw layers): a student whose layers do not divide the teacher's is then refused
    needs_layer_multiple = False
    # whether hidden states of a student narrower or wider than the teacher go through a learned projection
    # (models/projection.py; False: the method compares something width-free, e.g. MiniLM's relations)
    projects = True

    @classmethod
    def build(cls, settings: MethodSettings) -> LayerwiseKD:
        """The common arguments (``settings.group(DistilFlags)``, ``settings.group(LayerwiseFlags)``, the student's and the teacher's
        shapes), plus :meth:`own_arguments`."""
        d, mu = settings.group(DistilFlags), settings.group(LayerwiseFlags).mu
        if not (d.hard_weight or d.soft_weight or mu):
            raise UserError("--hard_weight, --soft_weight and --mu are all 0: the student would learn nothing")
        check_temperature(settings.regression, d.softmax_temp)
        student, teacher = settings.need_student(), settings.need_teacher()
        return cls(
            student.num_layers,
            teacher.num_layers,
            d.hard_weight,
            d.soft_weight,
            d.softmax_temp,
            mu,
            padding=settings.padding,
            student_width=student.hidden_size,
            teacher_width=teacher.hidden_size,
            projection_optimiser=settings.optimiser,
            regression=settings.regression,
            **cls.own_arguments(settings),
        )

    @classmethod
    def own_arguments(cls, settings: MethodSettings) -> dict[str, Any]:
        """The subclass's own constructor arguments, from its settings groups (and ``settings.legacy``)."""
        return {}

    def init_pairs(self, init_range: tuple[int, int, int] | None, pretrained_student: bool) -> list[tuple[int, int]]:
        """(student layer, pretrained teacher layer) pairs to copy, 1-based: ``--init_start`` /``--init_end`` /
        ``--init_step`` when given, else :meth:`default_init_pairs`."""
        if init_range is not None:
            return list(enumerate(teacher_layer_map(*init_range, self.ls, self.lt), 1))
        if pretrained_student or (self.student_width is not None and self.student_width != self.teacher_width):
            return []  # a pretrained student brings its weights; a student of another width cannot take the teacher's
        return self.default_init_pairs()

    def default_init_pairs(self) -> list[tuple[int, int]]:
        """Student layer j <- teacher layer j * skip (the original's layer-wise scripts; ``uniform_layers`` when the
        student's layers do not divide the teacher's)."""
        return list(enumerate(uniform_layers(self.ls, self.lt), 1))

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        padding: str = "max_length",
        *,
        student_width: int | None = None,
        teacher_width: int | None = None,
        projection_optimiser: OptimiserSettings | None = None,
        regression: bool = False,
    ):
        """``student_width``/``teacher_width``: the hidden widths; where they differ (and a hidden loss runs) the
        student's hidden states reach the teacher's width through a learned :class:`WidthProjection`, trained with
        ``projection_optimiser`` (the student's settings). ``regression``: the task's (one output, a score)."""
        if padding not in PADDINGS:
            raise ValueError(f"padding {padding!r}: expected one of {PADDINGS}")
        self.ls, self.lt = num_student_layers, num_teacher_layers
        self.hard_weight, self.soft_weight, self.temperature, self.mu = hard_weight, soft_weight, temperature, mu
        self.padding = padding
        self.student_width, self.teacher_width = student_width, teacher_width
        self.projection_optimiser = projection_optimiser
        self.regression = regression
        self.projection: WidthProjection | None = None

    @property
    def needs_projection(self) -> bool:
        return (
            self.projects
            and bool(self.mu)
            and self.student_width is not None
            and self.student_width != self.teacher_width
        )

    def in_teacher_space(self, student: ModelOutputs) -> ModelOutputs:
        """The student's outputs with its hidden states (and embeddings) projected to the teacher's width; as they
        are without a projection."""
        if self.projection is None or student.hidden_states is None:
            return student
        p = self.projection
        emb = student.embeddings
        return replace(
            student,
            hidden_states=tuple(p(j, h) for j, h in enumerate(student.hidden_states, 1)),
            embeddings=p(0, emb) if emb is not None and p.shared else emb,
        )

    @property
    def masked(self) -> bool:
        """``--padding dynamic``: masked hidden losses (and LAD's masked gate LayerNorm); ``max_length``: the
        original's full-sequence MSE (and fixed-length gate LayerNorm)."""
        return self.padding == "dynamic"

    def loss_mask(self, outputs: ModelOutputs) -> torch.Tensor | None:
        """The attention mask the hidden losses are masked with (None: the original's full-sequence MSE)."""
        return outputs.attention_mask if self.masked else None

    @property
    def needs_hidden_states(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        return self.mu != 0

    @property
    def ignores_padding(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        """The original's hidden MSE (and LAD's fixed-length gate) include padding positions; the masked
        losses of ``--padding dynamic`` do not."""
        return self.mu == 0 or self.masked

    @property
    def every_parameter_learns(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        """Hidden losses only (``hard_weight = soft_weight = 0``): the student's pooler and classifier get no
        gradient."""
        return bool(self.hard_weight or self.soft_weight)

    @property
    def uses_teacher(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        """Hard labels only (soft_weight = mu = 0) need no teacher forward."""
        return bool(self.soft_weight or self.mu)

    @property
    def skip(self) -> int:
        return self.lt // self.ls

    def hidden_pairs(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[list[HiddenPair], dict[str, torch.Tensor]]:
        """The matched (student, target) pairs of this batch, and statistics to log (e.g. mean gate values)."""
        raise NotImplementedError

    def hidden_loss(
        self, pairs: list[HiddenPair], mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The hidden loss and its per-layer terms (default :func:`hidden_mse_loss`); ``mask``: see
        :meth:`loss_mask`."""
        return hidden_mse_loss(pairs, self.mu, mask)

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]:
        parts = logits_kd_loss(
            student.logits,
            None if teacher is None else teacher.logits,
            batch.get("labels"),
            self.hard_weight,
            self.soft_weight,
            self.temperature,
            self.regression,
        )
        loss = parts["logits_loss"]
        if self.mu:
            assert teacher is not None  # uses_teacher: the engine runs the teacher whenever mu != 0
            student = self.in_teacher_space(student)
            pairs, stats = self.hidden_pairs(student, teacher)
            hidden, per_layer = self.hidden_loss(pairs, self.loss_mask(student))
            parts["hidden_loss"] = hidden
            parts.update({f"hidden_loss_{j}": v for j, v in per_layer.items()})
            parts.update(stats)
            loss = loss + hidden
        parts["loss"] = loss
        return parts

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray | None:
        """[L_s, L_t] matrix: how much teacher layer i contributes to student layer j's target (None: no map)."""
        return None
