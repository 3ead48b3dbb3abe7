"""LAD and its ablations: the student learns aggregations of teacher layers made by trainable gate blocks.

Lin, Chen, Kao, "LAD: Layer-Wise Adaptive Distillation for BERT Model Compression", Sensors 23(3):1483, 2023
(LAD: §3; LAD-NO: §5.4; partial LAD: §5.5). The gate itself is :class:`fine_tune.models.gates.GateBlock`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch

from ..engine.device import same_device
from ..engine.optim import GATE_NO_DECAY, OptimiserSettings
from ..engine.protocol import ExtraParameters, ModelOutputs
from ..errors import UserError
from ..layer_mapping import uniform_layers
from ..models.gates import GateBlock, aggregate_chain, make_gates
from ..settings import LayerwiseFlags, _check_adamw, flag
from .base import MethodSettings
from .layerwise import HiddenPair, LayerwiseKD, attention_mask_of, masked_mean


def lad_targets(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """LAD: student layer j learns A_{j * skip}, skip = L_t / L_s (1-based aggregation indices); A_{ceil(j L_t / L_s)}
    when L_s does not divide L_t (4 of 6: A_2, A_3, A_5, A_6)."""
    return uniform_layers(num_student_layers, num_teacher_layers)


def chain_contributions(gbar: list[float], k: int, num_teacher_layers: int) -> np.ndarray:
    r"""Approximate weight of teacher layer i in A_k from mean gate values (ignoring the LayerNorm)::

        w_i = gbar_i * prod_{m = i+1..k} (1 - gbar_m),  gbar_1 = 1,  w_i = 0 for i > k

    ``gbar[m-1]`` is the mean gate value of gate m (gbar[0] is ignored)."""
    w = np.zeros(num_teacher_layers)
    for i in range(1, k + 1):
        gi = 1.0 if i == 1 else gbar[i - 1]
        w[i - 1] = gi * np.prod([1.0 - gbar[m - 1] for m in range(i + 1, k + 1)])
    return w


@dataclass(frozen=True)
class GateFlags:
    """The LAD gates' own AdamW, schedule and clipping (the original's gate optimiser)."""

    key: ClassVar[str] = "gate"
    gate_lr: float = flag(1e-5, "gate AdamW peak learning rate")
    gate_beta1: float = flag(0.9, "gate AdamW beta1")
    gate_beta2: float = flag(0.999, "gate AdamW beta2")
    gate_eps: float = flag(1e-8, "gate AdamW epsilon")
    gate_weight_decay: float = flag(0.01, "gate AdamW weight decay (not on biases and LayerNorm weights)")
    gate_max_norm: float = flag(1.0, "gradient clipping norm, per gate")
    gate_total_step: int | None = flag(None, "gate schedule length (default: --total_step)")
    gate_warmup_step: int | None = flag(None, "gate linear warmup steps (default: --warmup_step)")
    gate_device_id: int | None = flag(
        None,
        "gates' CUDA device index; -1 = CPU (default: the student's device); under "
        "torchrun relative to each rank: k means cuda:(LOCAL_RANK + k * processes per node)",
    )

    def __post_init__(self) -> None:
        _check_adamw(self, "gate_")  # the student's checks (OptimiserFlags), of the gate_ flags

    def settings(self, student: OptimiserSettings, no_decay: Iterable[str] | None = None) -> OptimiserSettings:
        """The gates' :class:`OptimiserSettings`; the schedule's lengths default to the student's. ``no_decay``:
        the names exempt from weight decay (default: the original gate optimiser's)."""
        total = self.gate_total_step or student.total_step
        warmup = student.warmup_step if self.gate_warmup_step is None else self.gate_warmup_step
        if warmup > total:
            raise UserError(
                f"--gate_warmup_step {warmup} exceeds the gates' schedule of {total} steps "
                f"(--gate_total_step, default --total_step)"
            )
        return OptimiserSettings(
            lr=self.gate_lr,
            beta1=self.gate_beta1,
            beta2=self.gate_beta2,
            eps=self.gate_eps,
            weight_decay=self.gate_weight_decay,
            max_norm=self.gate_max_norm,
            total_step=total,
            warmup_step=warmup,
            no_decay=GATE_NO_DECAY if no_decay is None else tuple(no_decay),
            clip_per_module=True,
        )


class GatedKD(LayerwiseKD):
    """Shared by LAD, LAD-NO and partial LAD: the gates, their optimiser settings and their checkpoint files.
    The gates are made by :meth:`create_parameters`, after the seed is set and the student is built, so a run's
    gates are reproducible. ``padding="dynamic"``: the gates' masked LayerNorm
    (:class:`fine_tune.models.gates.GateBlock`) and the masked hidden loss; the gate parameters are the same, so
    gate files load in either mode."""

    flag_groups: ClassVar[tuple[type, ...]] = (GateFlags,)

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        *,
        d_model: int,
        seq_len: int,
        num_gates: int,
        gate_optimiser: OptimiserSettings,
        padding: str = "max_length",
        **common: Any,
    ) -> None:
        super().__init__(
            num_student_layers, num_teacher_layers, hard_weight, soft_weight, temperature, mu, padding, **common
        )
        self.d_model, self.seq_len, self.num_gates = d_model, seq_len, num_gates
        self.gates: torch.nn.ModuleList | None = None
        self.gate_device: torch.device | None = None
        self.gate_optimiser = gate_optimiser

    @classmethod
    def own_arguments(cls, settings: MethodSettings) -> dict[str, Any]:
        return {
            "d_model": settings.need_teacher().hidden_size,
            "seq_len": settings.max_seq_len,
            "gate_optimiser": settings.group(GateFlags).settings(
                settings.need_optimiser(), settings.legacy.get("gate_no_decay")
            ),
        }

    def record(self) -> dict[str, Any]:
        return {"gate_no_decay": list(self.gate_optimiser.no_decay)}

    def create_parameters(self, device: torch.device | None, student_device: torch.device | None = None) -> None:
        """The gates (on ``device``, the gates' device), then the width projection where the student's width
        differs (the gates work in the teacher's width)."""
        self.gates = make_gates(self.num_gates, self.d_model, self.seq_len)
        if device is not None:
            self.gates.to(device)
        self.gate_device = device
        super().create_parameters(device, student_device)

    def made_gates(self) -> torch.nn.ModuleList:
        """The gates :meth:`create_parameters` made (the engine makes them before it reads, trains or saves them)."""
        assert self.gates is not None, "the gates are made by create_parameters"
        return self.gates

    def gate(self, index: int) -> GateBlock:
        """Gate ``index + 1`` (``index`` 0-based, as in :attr:`gates`)."""
        return cast(GateBlock, self.made_gates()[index])  # make_gates makes GateBlocks only

    def extra_parameters(self) -> list[ExtraParameters]:
        if not self.mu:  # no hidden loss: the gates would never receive a gradient
            return []
        return [
            ExtraParameters(name="gate", modules=list(self.made_gates()), optimiser=self.gate_optimiser),
            *super().extra_parameters(),
        ]

    def checkpoint_state(self) -> dict[str, dict[str, Any]]:
        """``gate-{i}`` (0-based, as the original) -> state_dict; the engine writes ``gate-{i}-{step}.pt``."""
        return {**{f"gate-{i}": g.state_dict() for i, g in enumerate(self.made_gates())}, **super().checkpoint_state()}

    def load_checkpoint_state(self, states: dict[str, dict[str, Any]]) -> None:
        for i, g in enumerate(self.made_gates()):
            g.load_state_dict(states[f"gate-{i}"])
        super().load_checkpoint_state(states)

    def train(self, mode: bool = True) -> None:
        self.made_gates().train(mode)
        super().train(mode)

    def mean_chain_gates(self, teacher: ModelOutputs, upto: int) -> list[float]:
        """[1, gbar_2, ..., gbar_upto]: each chained gate's value averaged over non-padding tokens and dimensions."""
        assert teacher.hidden_states is not None  # needs_hidden_states: the dev sample's forward keeps them
        values: list[torch.Tensor | None] = []
        th = self._to_gates(teacher.hidden_states)
        aggregate_chain(self.made_gates(), th, upto, values, self._gate_mask(teacher, th))
        # (values[0] is gate 1's None: never applied)
        return [1.0] + [
            masked_mean(g, attention_mask_of(teacher).to(g.device)).item() for g in values[1:] if g is not None
        ]

    def _to_gates(self, hidden: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if self.gate_device is None or same_device(hidden[0].device, self.gate_device):
            return hidden
        return tuple(h.to(self.gate_device) for h in hidden)

    def _gate_mask(self, teacher: ModelOutputs, hidden: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """The attention mask on the gates' device under ``--padding dynamic`` (masked gate LayerNorm), else None."""
        return attention_mask_of(teacher).to(hidden[0].device) if self.masked else None

    def _gate_stats(
        self, values: list[torch.Tensor | None], teacher: ModelOutputs, names: Iterable[int]
    ) -> dict[str, torch.Tensor]:
        """``gate_mean_{k}``: each gate value's mean over every position (the original's fixed padding) or over
        the real tokens (``--padding dynamic``, where the batch width varies)."""
        stats: dict[str, torch.Tensor] = {}
        for name, g in zip(names, values):
            if g is None:
                continue
            g = g.detach().float()
            stats[f"gate_mean_{name}"] = (
                masked_mean(g, attention_mask_of(teacher).to(g.device)) if self.masked else g.mean()
            )
        return stats


class LAD(GatedKD):
    r"""LAD: L_t gates chained over the teacher layers, ``A_1 = H_t[1]``, ``A_k = gate_k(A_{k-1}, H_t[k])``;
    student layer j learns ``A_{j * skip}`` (6 of 12 layers: A_2, A_4, ..., A_12; 4 of 12: A_3, A_6, A_9, A_12)."""

    name = "lad"
    map_caption = (
        "Weight of teacher layer i in student layer j's target A_k ~ g_i * prod_{m=i+1..k}(1 - g_m), g = mean "
        "gate value over non-padding tokens and dimensions of the dev sample; ignores the gates' LayerNorm."
    )

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        **kw: Any,
    ) -> None:
        super().__init__(
            num_student_layers,
            num_teacher_layers,
            hard_weight,
            soft_weight,
            temperature,
            mu,
            num_gates=num_teacher_layers,
            **kw,
        )
        self.targets = lad_targets(num_teacher_layers, num_student_layers)

    def hidden_pairs(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[list[HiddenPair], dict[str, torch.Tensor]]:
        assert student.hidden_states is not None and teacher.hidden_states is not None  # needs_hidden_states
        values: list[torch.Tensor | None] = []
        th = self._to_gates(teacher.hidden_states)
        agg = aggregate_chain(self.made_gates(), th, max(self.targets), values, self._gate_mask(teacher, th))
        dev = student.hidden_states[0].device
        pairs = [HiddenPair(j, student.hidden_states[j - 1], agg[k - 1].to(dev)) for j, k in enumerate(self.targets, 1)]
        return pairs, self._gate_stats(values, teacher, range(1, len(values) + 1))

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray:
        gbar = self.mean_chain_gates(teacher, max(self.targets))
        return np.stack([chain_contributions(gbar, k, self.lt) for k in self.targets])

    def describe_mapping(self) -> str:
        return ", ".join(f"S{j}<-A{k}" for j, k in enumerate(self.targets, 1))


class LADNO(GatedKD):
    r"""LAD-NO (no overlap): L_s gates, no recurrence; student layer j learns
    ``gate_j(H_t[j*skip - 1], H_t[j*skip])`` (pairs (1,2), (3,4), ... for 6 of 12 layers), the gate value computed
    from the lower layer of the pair."""

    name = "lad_no"
    needs_layer_multiple = True
    map_caption = (
        "Student layer j's target gate_j(T_lo, T_hi): weight g (mean gate value over non-padding tokens and "
        "dimensions of the dev sample) on the upper layer, 1 - g on the lower; ignores the gate's LayerNorm."
    )

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        **kw: Any,
    ) -> None:
        if num_teacher_layers < 2 * num_student_layers:
            raise UserError(
                f"LAD-NO pairs teacher layers: a {num_student_layers}-layer student needs a teacher with "
                f"at least {2 * num_student_layers} layers (the teacher has {num_teacher_layers})"
            )
        super().__init__(
            num_student_layers,
            num_teacher_layers,
            hard_weight,
            soft_weight,
            temperature,
            mu,
            num_gates=num_student_layers,
            **kw,
        )
        self.pairs = [(j * self.skip - 1, j * self.skip) for j in range(1, num_student_layers + 1)]

    def hidden_pairs(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[list[HiddenPair], dict[str, torch.Tensor]]:
        assert student.hidden_states is not None and teacher.hidden_states is not None  # needs_hidden_states
        th = self._to_gates(teacher.hidden_states)
        mask = self._gate_mask(teacher, th)
        dev = student.hidden_states[0].device
        pairs: list[HiddenPair] = []
        values: list[torch.Tensor | None] = []
        for j, (lo, hi) in enumerate(self.pairs, 1):
            out, g = self.gate(j - 1).mix(th[lo - 1], th[hi - 1], mask)
            pairs.append(HiddenPair(j, student.hidden_states[j - 1], out.to(dev)))
            values.append(g)
        return pairs, self._gate_stats(values, teacher, range(1, len(values) + 1))

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray:
        assert teacher.hidden_states is not None  # needs_hidden_states: the dev sample's forward keeps them
        th = self._to_gates(teacher.hidden_states)
        w = np.zeros((self.ls, self.lt))
        for j, (lo, hi) in enumerate(self.pairs, 1):
            g = masked_mean(self.gate(j - 1).gate_value(th[lo - 1]), attention_mask_of(teacher).to(th[0].device)).item()
            w[j - 1, hi - 1], w[j - 1, lo - 1] = g, 1 - g
        return w

    def describe_mapping(self) -> str:
        return ", ".join(f"S{j}<-gate(T{lo},T{hi})" for j, (lo, hi) in enumerate(self.pairs, 1))


def parse_indices(text: str | None, flag: str) -> list[int] | None:
    """Comma-separated 1-based layer indices (``--gate_indices 2,4,6``)."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 2,4,6,8,10") from None


def partial_lad_mapping(
    gate_indices: list[int], num_student_layers: int, num_teacher_layers: int
) -> list[tuple[str, int]]:
    """Partial LAD: student layers 1..|G| learn A_g for g in G; the remaining student layers learn the raw teacher
    layers max(G) + skip, max(G) + 2 skip, ... Returns ('agg', g) or ('raw', t) per student layer."""
    skip = num_teacher_layers // num_student_layers
    if not gate_indices:
        raise UserError("--gate_indices: give at least one gate index, e.g. 2,4,6,8,10")
    bad = [g for g in gate_indices if not 1 <= g <= num_teacher_layers]
    if bad:
        raise UserError(
            f"--gate_indices {','.join(map(str, gate_indices))}: {bad[0]} is out of range; the teacher has "
            f"{num_teacher_layers} layers (indices 1..{num_teacher_layers})"
        )
    if len(set(gate_indices)) != len(gate_indices) or sorted(gate_indices) != list(gate_indices):
        raise UserError(f"--gate_indices {','.join(map(str, gate_indices))}: indices must be increasing and distinct")
    if len(gate_indices) > num_student_layers:
        raise UserError(f"--gate_indices: {len(gate_indices)} indices for a {num_student_layers}-layer student")
    raw = [max(gate_indices) + skip * r for r in range(1, num_student_layers - len(gate_indices) + 1)]
    if raw and raw[-1] > num_teacher_layers:
        raise UserError(
            f"--gate_indices {','.join(map(str, gate_indices))}: the remaining "
            f"{num_student_layers - len(gate_indices)} student layer(s) would learn teacher layers {raw}, "
            f"beyond the teacher's {num_teacher_layers}"
        )
    return [("agg", g) for g in gate_indices] + [("raw", t) for t in raw]


@dataclass(frozen=True)
class ProbingFlags:
    key: ClassVar[str] = "probing"
    probing_exp: str = flag(None, "probing experiment", required=True, choices=("partial_lad",))
    gate_indices: str = flag(
        "2,4,6,8,10",
        "partial LAD: comma-separated gate (teacher layer) indices, 1-based, "
        "whose aggregation student layers 1..|G| learn",
    )
    student_indices: str | None = flag(
        None, "student layers that learn (partial LAD uses every student layer; accepted for the seed commands)"
    )


class PartialLAD(GatedKD):
    """Partial LAD (``run_probing_lad.py --probing_exp partial_lad``): max(G) gates chained over teacher layers
    1..max(G); student layers 1..|G| learn A_g (g in G), the remaining ones raw teacher layers
    (``--gate_indices 2,4,6,8,10``, 6 of 12: S1..S5 <- A2..A10, S6 <- T12)."""

    name = "partial_lad"
    needs_layer_multiple = True
    flag_groups: ClassVar[tuple[type, ...]] = (GateFlags, ProbingFlags)
    map_caption = LAD.map_caption + " Rows beyond the gate indices learn one raw teacher layer."

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        *,
        gate_indices: list[int],
        init_uncovered: bool = False,
        **kw: Any,
    ) -> None:
        self.mapping = partial_lad_mapping(gate_indices, num_student_layers, num_teacher_layers)
        super().__init__(
            num_student_layers,
            num_teacher_layers,
            hard_weight,
            soft_weight,
            temperature,
            mu,
            num_gates=max(gate_indices),
            **kw,
        )
        self.gate_indices = list(gate_indices)
        self.init_uncovered = init_uncovered

    @classmethod
    def own_arguments(cls, settings: MethodSettings) -> dict[str, Any]:
        return {
            **super().own_arguments(settings),
            "init_uncovered": settings.group(LayerwiseFlags).init_uncovered,
            "gate_indices": parse_indices(settings.group(ProbingFlags).gate_indices, "--gate_indices"),
        }

    def default_init_pairs(self) -> list[tuple[int, int]]:
        """Student layer j <- G[j] for j <= |G|; the uncovered layers stay random (the original's quirk) unless
        ``--init_uncovered``."""
        return [(j, idx) for j, (k, idx) in enumerate(self.mapping, 1) if k == "agg" or self.init_uncovered]

    def hidden_pairs(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[list[HiddenPair], dict[str, torch.Tensor]]:
        assert student.hidden_states is not None and teacher.hidden_states is not None  # needs_hidden_states
        values: list[torch.Tensor | None] = []
        th = self._to_gates(teacher.hidden_states)
        agg = aggregate_chain(self.made_gates(), th, max(self.gate_indices), values, self._gate_mask(teacher, th))
        dev = student.hidden_states[0].device
        pairs = []
        for j, (kind, idx) in enumerate(self.mapping, 1):
            target = agg[idx - 1] if kind == "agg" else teacher.hidden_states[idx - 1]
            pairs.append(HiddenPair(j, student.hidden_states[j - 1], target.to(dev)))
        return pairs, self._gate_stats(values, teacher, range(1, len(values) + 1))

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray:
        gbar = self.mean_chain_gates(teacher, max(self.gate_indices))
        rows = []
        for kind, idx in self.mapping:
            if kind == "agg":
                rows.append(chain_contributions(gbar, idx, self.lt))
            else:
                r = np.zeros(self.lt)
                r[idx - 1] = 1.0
                rows.append(r)
        return np.stack(rows)

    def describe_mapping(self) -> str:
        return ", ".join(f"S{j}<-{'A' if kind == 'agg' else 'T'}{idx}" for j, (kind, idx) in enumerate(self.mapping, 1))
