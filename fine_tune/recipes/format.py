"""The file format of distillation recipes (issue 33): parsing and validation only, no model code.

A recipe is a YAML (``.yaml``/``.yml``) or JSON (``.json``) mapping with these keys::

    method: null          # optional: a built-in method (lad, minilm, ...) whose losses the terms are added to
    teachers:             # optional; default: the run's teacher, named "teacher"
      - {name: t1, experiment: t1, model: bert, ckpt: best, weight: 1.0}
      - {name: t2, hf: path/to/finetuned-roberta, weight: 0.5}
    terms:                # required, at least one
      - {feature: logits, loss: kl, temperature: 2.0, weight: 0.5}
      - {feature: hidden, loss: mse, layers: [[1, 2], [2, 4], [3, 6]]}      # [student, teacher]; 0 = embeddings
      - {feature: attention_probs, loss: kl, layers: {rule: last},
         weight: {schedule: linear, from: 0.0, to: 1.0, steps: 1000}}
      - {name: minilm, weight: 2.5, sum: [{feature: attention_probs, loss: kl, layers: final},
                                          {feature: value_relation, loss: kl, layers: final}]}
    training: {schedule: constant, incomplete_batches: skip}    # optional; default: linear, train

Each term is one loss ``weight(step) * loss(student feature, teacher feature)``; the run's loss is their sum. A sum
term (``sum: [...]``) is ``weight(step) * (L_1 + L_2 + ...)``, its members' losses added first (MiniLM's
``mu (L_AT + L_VR)``); a layer term's ``reduction`` combines its pairs by their mean (default) or TinyBERT's sum.
``training`` (:class:`Training`) sets the learning rate's schedule and whether incomplete batches train.
The losses a feature allows (:data:`ALLOWED`), with ``s`` the student's and ``t`` the teacher's feature:

- ``kl``: ``KL(softmax(t / T) || softmax(s / T))`` over the last axis (Hinton et al. 2015, "Distilling the
  knowledge in a neural network"; for attention and relations: TinyBERT, Jiao et al. 2020; MiniLM, Wang et al.
  2020 and 2021); ``T`` is ``temperature`` (logits only; 1 elsewhere).
- ``ce`` on ``logits``: the soft cross-entropy ``-sum softmax(t / T) * log_softmax(s / T)`` to the teacher's
  distribution; on ``hard_labels``: the cross-entropy to the gold labels (no teacher, no temperature).
- ``mse``: ``mean((s - t)^2)`` (on hidden states after the projection, TinyBERT; FitNets, Romero et al. 2015).
- ``cosine``: ``mean(1 - cos(s, t))`` per token.
- ``normalized_mse``: ``mean((s / ||s|| - t / ||t||)^2)`` per token (PKD, Sun et al. 2019, on [CLS]).

Layer features name their layers by ``layers``: explicit ``[student, teacher]`` pairs (layer 0 is the embedding
output, 1..L the transformer layers) or a rule (:class:`LayerMap`) resolved once the two models' depths are known.
A weight or temperature is a number or a :class:`Schedule`. Every refusal is one :class:`~fine_tune.errors.UserError`
line naming the file and the key path (``recipe r.yaml: terms[2].loss: unknown loss 'msee'; did you mean 'mse'?``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UserError, closest_name
from ..layer_mapping import uniform_layers

FEATURES: tuple[str, ...] = (
    "logits",
    "hard_labels",
    "hidden",
    "cls",
    "embeddings",
    "attention_scores",
    "attention_probs",
    "value_relation",
    "qkv_relation",
)
LOSSES: tuple[str, ...] = ("kl", "mse", "ce", "cosine", "normalized_mse")
ALLOWED: dict[str, tuple[str, ...]] = {
    "logits": ("kl", "mse", "ce"),
    "hard_labels": ("ce",),
    "hidden": ("mse", "cosine", "normalized_mse"),
    "cls": ("mse", "cosine", "normalized_mse"),
    "embeddings": ("mse", "cosine", "normalized_mse"),
    "attention_scores": ("mse",),
    "attention_probs": ("kl", "mse"),
    "value_relation": ("kl",),
    "qkv_relation": ("kl",),
}
LAYER_FEATURES: tuple[str, ...] = (
    "hidden",
    "cls",
    "attention_scores",
    "attention_probs",
    "value_relation",
    "qkv_relation",
)
ATTENTION_FEATURES: tuple[str, ...] = ("attention_scores", "attention_probs", "value_relation", "qkv_relation")
HEAD_MEAN_FEATURES: tuple[str, ...] = ("attention_scores", "attention_probs")
PROJECTION_FEATURES: tuple[str, ...] = ("hidden", "cls", "embeddings")
PROJECTIONS: tuple[str, ...] = ("auto", "none", "shared")
RULES: tuple[str, ...] = ("uniform", "skip", "last", "final")
# how a term combines its layer pairs (and the masked MSE's order of additions): the layer-wise scripts' mean, or
# TinyBERT's sum (terms.py)
REDUCTIONS: tuple[str, ...] = ("mean", "sum")
REDUCTION_FEATURES: tuple[str, ...] = LAYER_FEATURES + ("embeddings",)
LR_SCHEDULES: tuple[str, ...] = ("linear", "constant")  # the learning rate's (engine/optim.SCHEDULES)
INCOMPLETE_BATCHES: tuple[str, ...] = ("train", "skip")
SCHEDULES: tuple[str, ...] = ("constant", "linear")
CKPT_NAMES: tuple[str, ...] = ("best", "last")
DEFAULT_TEACHER = "teacher"  # the run's own teacher, the only one when a recipe declares none
SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json")

TOP_KEYS: tuple[str, ...] = ("method", "teachers", "terms", "training")
TRAINING_KEYS: tuple[str, ...] = ("schedule", "incomplete_batches")
TEACHER_KEYS: tuple[str, ...] = ("name", "experiment", "model", "ckpt", "hf", "weight")
TERM_KEYS: tuple[str, ...] = (
    "feature",
    "loss",
    "weight",
    "temperature",
    "layers",
    "projection",
    "teacher",
    "relation_heads",
    "head_mean",
    "name",
    "reduction",
)
SUM_KEYS: tuple[str, ...] = ("sum", "weight", "name")  # a sum term: its members' losses added, then weighted once
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


# ---- small checks, each refusing in one line -------------------------------------------------------------------


def _refuse(where: str, key: str, message: str) -> UserError:
    return UserError(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({_shown(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({_shown(value)})"
    if isinstance(value, str):
        return f"a string ({_shown(value)})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expect(value: Any, expected: str, where: str, key: str) -> UserError:
    return _refuse(where, key, f"expected {expected}, got {_kind(value)}")


def _mapping(value: Any, where: str, key: str) -> dict:
    if not isinstance(value, dict):
        raise _expect(value, "a mapping", where, key)
    return value


def _unknown(word: Any, names: tuple[str, ...] | list[str], what: str) -> str:
    close = closest_name(word, names) if isinstance(word, str) else None
    hint = f"did you mean {close!r}? " if close is not None else ""
    return f"unknown {what} {_shown(word)}; {hint}expected one of: {', '.join(names)}"


def _check_keys(data: dict, allowed: tuple[str, ...], where: str, key: str) -> None:
    for k in data:
        if k not in allowed:
            raise _refuse(where, f"{key}.{k}" if key else str(k), _unknown(k, allowed, "key"))


def _choice(value: Any, names: tuple[str, ...], what: str, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise _expect(value, f"a {what} name ({', '.join(names)})", where, key)
    if value not in names:
        raise _refuse(where, key, _unknown(value, names, what))
    return value


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect(value, "a number", where, key)
    if not math.isfinite(value):
        raise _refuse(where, key, f"{_shown(value)} is not a finite number")
    return float(value)


def _int(value: Any, minimum: int, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expect(value, f"an integer >= {minimum}", where, key)
    if value < minimum:
        raise _refuse(where, key, f"{value} is below {minimum}; expected an integer >= {minimum}")
    return value


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _expect(value, "a non-empty string", where, key)
    return value


def _name(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _expect(value, "a name of letters, digits, '_', '.' or '-'", where, key)
    return value


# ---- schedules -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A value over training steps: ``constant`` (``start`` at every step) or ``linear`` from ``start`` at step 0
    to ``end`` at step ``steps``, held there after: ``start + (end - start) * min(step, steps) / steps``."""

    kind: str
    start: float
    end: float
    steps: int

    @classmethod
    def constant(cls, value: float) -> Schedule:
        return cls("constant", float(value), float(value), 1)

    def value_at(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"a schedule's step is >= 0, got {step}")
        if self.kind == "constant":
            return self.start
        return self.start + (self.end - self.start) * min(step, self.steps) / self.steps

    def record(self) -> dict:
        if self.kind == "constant":
            return {"schedule": "constant", "value": self.start}
        return {"schedule": "linear", "from": self.start, "to": self.end, "steps": self.steps}


def parse_schedule(value: Any, where: str, key: str, *, positive: bool = False) -> Schedule:
    """A number (constant) or ``{schedule: constant, value: v}`` or ``{schedule: linear, from: a, to: b, steps:
    n}``. Its values are >= 0 (a weight), or > 0 with ``positive`` (a temperature)."""

    def checked(v: Any, k: str) -> float:
        x = _number(v, where, k)
        if positive and x <= 0:
            raise _refuse(where, k, f"{_shown(v)} is not > 0")
        if x < 0:
            raise _refuse(where, k, f"{_shown(v)} is negative; expected a number >= 0")
        return x

    if not isinstance(value, dict):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _expect(value, "a number or a mapping {schedule: constant|linear, ...}", where, key)
        return Schedule.constant(checked(value, key))
    if "schedule" not in value:
        raise _refuse(
            where,
            key,
            "a mapping names its schedule: {schedule: constant, value: v} or "
            "{schedule: linear, from: a, to: b, steps: n}",
        )
    kind = _choice(value["schedule"], SCHEDULES, "schedule", where, f"{key}.schedule")
    fields = ("schedule", "value") if kind == "constant" else ("schedule", "from", "to", "steps")
    _check_keys(value, fields, where, key)
    for f in fields:
        if f not in value:
            raise _refuse(where, key, f"a {kind} schedule needs {', '.join(fields[1:])}; {f} is missing")
    if kind == "constant":
        return Schedule.constant(checked(value["value"], f"{key}.value"))
    return Schedule(
        "linear",
        checked(value["from"], f"{key}.from"),
        checked(value["to"], f"{key}.to"),
        _int(value["steps"], 1, where, f"{key}.steps"),
    )


# ---- layer maps ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerMap:
    """Which student layer learns from which teacher layer: explicit ``pairs`` ``(student, teacher)`` (0: the
    embedding output) or a ``rule`` for student layers ``j = 1..Ls`` of a ``Lt``-layer teacher:

    - ``uniform`` and ``skip``: ``j -> ceil(j * Lt / Ls)`` (every ``Lt/Ls``-th layer, the last onto the last;
      PKD-skip, Sun et al. 2019; TinyBERT's uniform map);
    - ``last``: ``j -> Lt - Ls + j`` (the teacher's top ``Ls`` layers; PKD-last);
    - ``final``: the student's last layer alone onto the teacher's last, ``(Ls, Lt)`` (MiniLM, MiniLMv2)."""

    rule: str | None = None
    pairs: tuple[tuple[int, int], ...] | None = None

    def resolve(self, num_student_layers: int, num_teacher_layers: int, where: str) -> tuple[tuple[int, int], ...]:
        ls, lt = num_student_layers, num_teacher_layers
        if ls < 1 or lt < 1:
            raise ValueError(f"{where}: models have at least one layer (student {ls}, teacher {lt})")
        if self.pairs is not None:
            for s, t in self.pairs:
                if s > ls:
                    raise UserError(f"{where}: student layer {s} is outside the {ls}-layer student")
                if t > lt:
                    raise UserError(f"{where}: teacher layer {t} is outside the {lt}-layer teacher")
            return self.pairs
        if self.rule == "final":
            return ((ls, lt),)
        if self.rule == "last":
            if ls > lt:
                raise UserError(
                    f"{where}: rule 'last' maps the {ls}-layer student onto the teacher's last layers, "
                    f"but the teacher has only {lt}"
                )
            return tuple((j, lt - ls + j) for j in range(1, ls + 1))
        return tuple(enumerate(uniform_layers(ls, lt), 1))  # uniform, skip: ceil(j * Lt / Ls)

    def record(self) -> dict | list:
        if self.rule is not None:
            return {"rule": self.rule}
        assert self.pairs is not None  # a LayerMap has its rule or its pairs (parse_layers)
        return [list(p) for p in self.pairs]


def parse_layers(value: Any, feature: str, where: str, key: str) -> LayerMap:
    """``uniform``/``skip``/``last``/``final``, ``{rule: ...}`` or a list of ``[student, teacher]`` pairs of ints >= 0 (>= 1
    for an attention feature: layer 0, the embeddings, has no attention), no student layer twice."""
    if isinstance(value, str):
        return LayerMap(rule=_choice(value, RULES, "layer rule", where, key))
    if isinstance(value, dict):
        _check_keys(value, ("rule",), where, key)
        if "rule" not in value:
            raise _refuse(where, key, f"a mapping names its rule: {{rule: {'|'.join(RULES)}}}")
        return LayerMap(rule=_choice(value["rule"], RULES, "layer rule", where, f"{key}.rule"))
    if not isinstance(value, list):
        raise _expect(value, "a list of [student, teacher] layer pairs or a rule (uniform, skip, last)", where, key)
    if not value:
        raise _refuse(where, key, "no layer pairs; expected a list of [student, teacher] layer pairs or a rule")
    lowest = 1 if feature in ATTENTION_FEATURES else 0  # (hidden, cls: 0 is the embedding output)
    pairs: list[tuple[int, int]] = []
    first: dict[int, int] = {}
    for i, pair in enumerate(value):
        k = f"{key}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise _expect(pair, "a [student, teacher] pair of layer numbers", where, k)
        for j, who in enumerate(("student", "teacher")):
            if _int(pair[j], 0, where, f"{k}[{j}]") < lowest:
                raise _refuse(
                    where,
                    f"{k}[{j}]",
                    f"{who} layer 0 is the embeddings, which have no attention; {feature} takes layers >= 1",
                )
        s, t = pair
        if s in first:
            raise _refuse(where, k, f"student layer {s} is mapped twice (also {key}[{first[s]}])")
        first[s] = i
        pairs.append((s, t))
    return LayerMap(pairs=tuple(pairs))


# ---- teachers, terms, recipes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher: a fine-tuned experiment of this toolkit (``experiment``, ``model``, ``ckpt``: a step, ``best``
    or ``last``) or a Hugging Face model (``hf``: a hub name or a folder), and its weight (> 0) where a term's
    teacher is left open (the teachers' weighted combination)."""

    name: str
    experiment: str | None
    model: str | None
    ckpt: int | str | None
    hf: str | None
    weight: float

    def record(self) -> dict:
        if self.hf is not None:
            return {"name": self.name, "hf": self.hf, "weight": self.weight}
        return {
            "name": self.name,
            "experiment": self.experiment,
            "model": self.model,
            "ckpt": self.ckpt,
            "weight": self.weight,
        }


@dataclass(frozen=True)
class Term:
    """One loss term: ``weight(step) * loss(student feature, teacher feature)`` (the module docstring gives each
    loss). ``index`` is its place in the recipe's ``terms``; ``name`` (default ``{feature}_{loss}``, ``_2``,
    ``_3``... on repeats) names it in logs. Fields that do not apply to the feature are None (``head_mean``:
    False). ``reduction``: how a layer feature combines its pairs, ``mean`` (the layer-wise scripts') or ``sum``
    (TinyBERT's). A member of a sum term (``{sum: [...], weight, name}``) has ``group``, the sum's name, and
    ``member``, its place in the sum; its ``weight`` is the sum's, applied once to the members' added losses."""

    index: int
    feature: str
    loss: str
    weight: Schedule
    temperature: Schedule | None
    layers: LayerMap | None
    projection: str | None
    teacher: str | None
    relation_heads: int | None
    head_mean: bool
    name: str
    reduction: str = "mean"
    group: str | None = None
    member: int | None = None

    @property
    def key(self) -> str:
        """Its key path in the recipe: ``terms[2]``, or ``terms[2].sum[0]`` for a sum's member."""
        return f"terms[{self.index}]" + (f".sum[{self.member}]" if self.member is not None else "")

    def record(self) -> dict:
        """The term as a recipe would write it, every default spelt out (it parses back to this term; a sum's
        member without its weight, which is the sum's) but ``reduction``'s, added after the first recipes: written
        where it is not ``mean``, so the record of a run started before it is the same record and the run resumes."""
        out: dict[str, Any] = {"name": self.name, "feature": self.feature, "loss": self.loss}
        if self.group is None:
            out["weight"] = self.weight.record()
        if self.temperature is not None:
            out["temperature"] = self.temperature.record()
        if self.layers is not None:
            out["layers"] = self.layers.record()
        if self.projection is not None:
            out["projection"] = self.projection
        if self.feature in HEAD_MEAN_FEATURES:
            out["head_mean"] = self.head_mean
        if self.relation_heads is not None:
            out["relation_heads"] = self.relation_heads
        if self.feature in REDUCTION_FEATURES and self.reduction != "mean":
            out["reduction"] = self.reduction
        if self.teacher is not None:
            out["teacher"] = self.teacher
        return out


@dataclass(frozen=True)
class Training:
    """How a recipe's student trains, beyond its losses (``training:``; the method's ``schedule`` and
    ``drop_last``, which the run plan resolves into the engine's settings): the learning rate's ``schedule``,
    ``linear`` (``--warmup_step`` warmup, then linear decay: every script's) or ``constant`` (TinyBERT's
    intermediate stage), followed by a learned projection too; ``incomplete_batches``: ``train`` (every row) or
    ``skip`` (each epoch trains only full micro-batches, TinyBERT's released loop)."""

    schedule: str = "linear"
    incomplete_batches: str = "train"

    def record(self) -> dict:
        return {"schedule": self.schedule, "incomplete_batches": self.incomplete_batches}


def parse_training(value: Any, where: str) -> Training:
    """``training: {schedule: linear|constant, incomplete_batches: train|skip}`` (either key optional)."""
    data = _mapping(value, where, "training")
    _check_keys(data, TRAINING_KEYS, where, "training")
    return Training(
        _choice(data.get("schedule", "linear"), LR_SCHEDULES, "learning-rate schedule", where, "training.schedule"),
        _choice(
            data.get("incomplete_batches", "train"),
            INCOMPLETE_BATCHES,
            "incomplete_batches value",
            where,
            "training.incomplete_batches",
        ),
    )


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the file (``path``, the ``sha256`` of its bytes, its ``text``; None from
    :func:`parse_recipe`), the built-in ``method`` its terms add to (or None), its ``teachers`` (empty: the run's
    teacher, :data:`DEFAULT_TEACHER`), its ``terms`` (a sum's members in place, one after the other) and how it
    trains (:class:`Training`)."""

    path: str | None
    sha256: str | None
    text: str | None
    method: str | None
    teachers: tuple[TeacherSpec, ...]
    terms: tuple[Term, ...]
    training: Training = Training()

    def record(self) -> dict:
        """JSON-able, for config.json: the file and its content normalised (defaults spelt out; a sum as
        ``{name, weight, sum: [members]}``); ``training`` only where it is not the default (added after the first
        recipes: a run started before it has the same record, and resumes)."""
        terms: list[dict] = []
        for t in self.terms:
            if t.group is None:
                terms.append(t.record())
            elif t.member == 0:
                terms.append({"name": t.group, "weight": t.weight.record(), "sum": [t.record()]})
            else:
                terms[-1]["sum"].append(t.record())
        out: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "method": self.method,
            "teachers": [t.record() for t in self.teachers],
            "terms": terms,
        }
        if self.training != Training():
            out["training"] = self.training.record()
        return out


def _parse_teacher(data: Any, where: str, key: str) -> TeacherSpec:
    data = _mapping(data, where, key)
    _check_keys(data, TEACHER_KEYS, where, key)
    if "name" not in data:
        raise _refuse(where, key, "a teacher needs a name")
    name = _name(data["name"], where, f"{key}.name")
    if ("experiment" in data) == ("hf" in data):
        raise _refuse(
            where,
            key,
            "a teacher is either an experiment (experiment, model, ckpt) or a Hugging Face "
            "model (hf): give exactly one of experiment and hf",
        )
    weight = _number(data.get("weight", 1.0), where, f"{key}.weight")
    if weight <= 0:
        raise _refuse(where, f"{key}.weight", f"{_shown(data['weight'])} is not > 0")
    if "hf" in data:
        for k in ("model", "ckpt"):
            if k in data:
                raise _refuse(where, f"{key}.{k}", f"a Hugging Face teacher (hf) takes no {k}")
        return TeacherSpec(name, None, None, None, _text(data["hf"], where, f"{key}.hf"), weight)
    if "model" not in data:
        raise _refuse(where, key, "an experiment teacher needs its model (the model name of the experiment)")
    ckpt = data.get("ckpt", "best")
    if isinstance(ckpt, str):
        if ckpt not in CKPT_NAMES:
            raise _refuse(where, f"{key}.ckpt", f"expected a checkpoint step, 'best' or 'last', got {_shown(ckpt)}")
    else:
        ckpt = _int(ckpt, 0, where, f"{key}.ckpt")
    return TeacherSpec(
        name,
        _text(data["experiment"], where, f"{key}.experiment"),
        _text(data["model"], where, f"{key}.model"),
        ckpt,
        None,
        weight,
    )


def _parse_term(
    data: Any,
    index: int,
    teachers: tuple[str, ...],
    where: str,
    member: int | None = None,
    group: tuple[str, Schedule] | None = None,
) -> Term:
    """One term; ``group`` (name, weight) for the ``member``-th term of a sum (which takes no weight of its own)."""
    key = f"terms[{index}]" + (f".sum[{member}]" if member is not None else "")
    data = _mapping(data, where, key)
    if group is not None and "weight" in data:
        raise _refuse(where, f"{key}.weight", f"a member of a sum takes the sum's weight (terms[{index}].weight)")
    if group is not None and "sum" in data:
        raise _refuse(where, f"{key}.sum", "a sum's member is one term (sums do not nest)")
    _check_keys(data, TERM_KEYS, where, key)
    for k in ("feature", "loss"):
        if k not in data:
            raise _refuse(where, key, f"a term needs its {k}")
    feature = _choice(data["feature"], FEATURES, "feature", where, f"{key}.feature")
    loss = _choice(data["loss"], LOSSES, "loss", where, f"{key}.loss")
    if loss not in ALLOWED[feature]:
        raise _refuse(
            where,
            f"{key}.loss",
            f"loss {loss!r} is not allowed for feature {feature!r} (allowed: {', '.join(ALLOWED[feature])})",
        )

    def only(k: str, features: tuple[str, ...], why: str) -> bool:
        if k in data and feature not in features:
            raise _refuse(where, f"{key}.{k}", f"{feature} takes no {k} ({why})")
        return feature in features

    weight = group[1] if group is not None else parse_schedule(data.get("weight", 1.0), where, f"{key}.weight")
    temperature = None
    if only("temperature", ("logits",), "only logits have a temperature"):
        temperature = parse_schedule(data.get("temperature", 1.0), where, f"{key}.temperature", positive=True)
    layers = None
    if only(
        "layers",
        LAYER_FEATURES,
        "embeddings is the layer pair (0, 0)"
        if feature == "embeddings"
        else "it is not a layer feature; layer features: " + ", ".join(LAYER_FEATURES),
    ):
        if "layers" not in data:
            raise _refuse(
                where, key, f"{feature} needs layers: [student, teacher] pairs or a rule ({', '.join(RULES)})"
            )
        layers = parse_layers(data["layers"], feature, where, f"{key}.layers")
    projection = None
    if only("projection", PROJECTION_FEATURES, "only hidden, cls and embeddings are projected"):
        projection = _choice(data.get("projection", "auto"), PROJECTIONS, "projection", where, f"{key}.projection")
    head_mean = False
    if only("head_mean", HEAD_MEAN_FEATURES, "only attention_scores and attention_probs average heads"):
        head_mean = data.get("head_mean", False)
        if not isinstance(head_mean, bool):
            raise _expect(head_mean, "true or false", where, f"{key}.head_mean")
    relation_heads = None
    if only("relation_heads", ("qkv_relation",), "only qkv_relation splits into relation heads"):
        if "relation_heads" not in data:
            raise _refuse(where, key, "qkv_relation needs relation_heads (an integer >= 1)")
        relation_heads = _int(data["relation_heads"], 1, where, f"{key}.relation_heads")
    teacher = None
    if "teacher" in data:
        if feature == "hard_labels":
            raise _refuse(where, f"{key}.teacher", "hard_labels learns from the gold labels, not from a teacher")
        teacher = data["teacher"]
        if not isinstance(teacher, str):
            raise _expect(teacher, "a teacher's name", where, f"{key}.teacher")
        if teacher not in teachers:
            raise _refuse(where, f"{key}.teacher", _unknown(teacher, teachers, "teacher"))
    reduction = "mean"
    if only("reduction", REDUCTION_FEATURES, "it has no layer pairs to combine"):
        reduction = _choice(data.get("reduction", "mean"), REDUCTIONS, "reduction", where, f"{key}.reduction")
    name = _name(data["name"], where, f"{key}.name") if "name" in data else ""
    return Term(
        index,
        feature,
        loss,
        weight,
        temperature,
        layers,
        projection,
        teacher,
        relation_heads,
        head_mean,
        name,
        reduction,
        None if group is None else group[0],
        member,
    )


def _parse_entry(data: Any, index: int, teachers: tuple[str, ...], where: str) -> list[Term]:
    """``terms[index]``: one term, or a sum ``{sum: [term, ...], weight, name}`` (its members, flat)."""
    key = f"terms[{index}]"
    if not (isinstance(data, dict) and "sum" in data):
        return [_parse_term(data, index, teachers, where)]
    _check_keys(data, SUM_KEYS, where, key)
    members = data["sum"]
    if not isinstance(members, list) or not members:
        raise _expect(members, "a non-empty list of terms", where, f"{key}.sum")
    group = (
        _name(data["name"], where, f"{key}.name") if "name" in data else "",
        parse_schedule(data.get("weight", 1.0), where, f"{key}.weight"),
    )
    return [_parse_term(raw, index, teachers, where, i, group) for i, raw in enumerate(members)]


def _name_terms(terms: list[Term], where: str) -> tuple[Term, ...]:
    """Given names stay (twice is refused, terms' and sums' alike: each is logged under its name); the others get
    ``{feature}_{loss}`` (a sum: ``sum``), then ``_2``, ``_3``... in order, skipping any name already taken."""
    taken: dict[str, str] = {}

    def take(name: str, key: str) -> None:
        if name in taken:
            raise _refuse(where, f"{key}.name", f"{name!r} names {taken[name]} too")
        taken[name] = key

    for t in terms:
        if t.group and t.member == 0:
            take(t.group, f"terms[{t.index}]")
        if t.name:
            take(t.name, t.key)

    def fresh(base: str, key: str) -> str:
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken[name] = key
        return name

    out: list[Term] = []
    for t in terms:
        if t.group == "":
            group = fresh("sum", f"terms[{t.index}]") if t.member == 0 else out[-1].group
            t = replace(t, group=group)
        if not t.name:
            t = replace(t, name=fresh(f"{t.feature}_{t.loss}", t.key))
        out.append(t)
    return tuple(out)


def _check_projections(terms: tuple[Term, ...], where: str) -> None:
    """One projection per recipe: ``shared`` (one map for every layer and the embeddings) and ``auto`` (one per
    layer) do not mix."""
    kinds = {t.projection: t for t in terms if t.projection in ("auto", "shared")}
    if len(kinds) > 1:
        raise _refuse(
            where,
            f"{kinds['auto'].key}.projection",
            f"auto (a projection per layer) beside "
            f"{kinds['shared'].key}'s shared (one for every layer): a recipe has one projection; give both "
            f"the same (or none)",
        )


def parse_recipe(data: object, where: str) -> Recipe:
    """A recipe from an already-loaded mapping; ``where`` begins every error line (``recipe r.yaml``)."""
    if not isinstance(data, dict):
        raise _refuse(
            where, "", f"the top level is {_kind(data)}; a recipe is a mapping with keys {', '.join(TOP_KEYS)}"
        )
    _check_keys(data, TOP_KEYS, where, "")
    method = data.get("method")
    if method is not None:
        if not isinstance(method, str):
            raise _expect(method, "a method name or null", where, "method")
        # its name is checked by the run plan (plan/training.py): the registry lies above
    teachers: tuple[TeacherSpec, ...] = ()
    if data.get("teachers") is not None:
        if not isinstance(data["teachers"], list) or not data["teachers"]:
            raise _expect(
                data["teachers"],
                "a non-empty list of teachers (or no teachers key: the run's teacher)",
                where,
                "teachers",
            )
        specs: list[TeacherSpec] = []
        for i, raw in enumerate(data["teachers"]):
            spec = _parse_teacher(raw, where, f"teachers[{i}]")
            for j, other in enumerate(specs):
                if other.name == spec.name:
                    raise _refuse(where, f"teachers[{i}].name", f"{spec.name!r} names teachers[{j}] too")
            specs.append(spec)
        teachers = tuple(specs)
    if "terms" not in data:
        raise _refuse(where, "", "no terms; a recipe lists its loss terms under terms")
    if not isinstance(data["terms"], list):
        raise _expect(data["terms"], "a list of terms", where, "terms")
    if not data["terms"]:
        raise _refuse(where, "terms", "empty; a recipe has at least one term")
    names = tuple(t.name for t in teachers) or (DEFAULT_TEACHER,)
    terms = _name_terms([t for i, raw in enumerate(data["terms"]) for t in _parse_entry(raw, i, names, where)], where)
    _check_projections(terms, where)
    if method is not None and "training" in data:
        raise _refuse(
            where,
            "training",
            f"a recipe adding terms to {method} trains as {method} does (its schedule "
            f"and batches are its flags'); drop training:",
        )
    training = parse_training(data["training"], where) if "training" in data else Training()
    return Recipe(None, None, None, method, teachers, terms, training)


# ---- files -----------------------------------------------------------------------------------------------------


def _yaml_loader():
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the plain one keeps the last silently)
    and reads ``1e-3`` as a number (YAML 1.2; YAML 1.1 wants ``1.0e-3`` and reads ``1e-3`` as a string)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Loader, node: yaml.MappingNode) -> dict:
        loader.flatten_mapping(node)
        seen: set = set()
        for key_node, _ in node.value:
            k = loader.construct_object(key_node, deep=True)
            if isinstance(k, (str, int, float, bool)) and k in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {k!r} given twice", key_node.start_mark)
            if isinstance(k, (str, int, float, bool)):
                seen.add(k)
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
    )
    return Loader


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} given twice")
        out[k] = v
    return out


def load_recipe(path: str | Path) -> Recipe:
    """The recipe in a ``.yaml``/``.yml`` (``yaml.safe_load``'s syntax) or ``.json`` file, with the sha256 of its
    bytes."""
    path = Path(path)
    where = f"recipe {path}"
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{where}: a recipe is a YAML (.yaml, .yml) or JSON (.json) file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{where}: not readable ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (byte {e.start})") from None
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except ValueError as e:  # a key twice
            raise UserError(f"{where}: not valid JSON ({e})") from None
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader (no Python objects)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            raise UserError(f"{where}: not valid YAML ({at}{problem})") from None
    recipe = parse_recipe(data, where)
    return replace(recipe, path=str(path), sha256=hashlib.sha256(raw).hexdigest(), text=text)
