"""The one rule that spreads a student's layers over a deeper teacher's, shared by the layer-wise methods, TinyBERT's
g(m) and the recipes' ``uniform``/``skip`` layer maps (torch-free: :mod:`fine_tune.recipes.format` reads it)."""

from __future__ import annotations


def uniform_layers(num_student_layers: int, num_teacher_layers: int, count: int | None = None) -> list[int]:
    """The teacher layer (1-based) of student layers 1..count (default all): ``ceil(j * L_t / L_s)``, i.e.
    ``j * skip`` when L_s divides L_t (6 of 12: 2, 4, ..., 12; the original's mappings), and evenly spread up to
    the last teacher layer when it does not (4 of 6: 2, 3, 5, 6)."""
    ls, lt = num_student_layers, num_teacher_layers
    return [-(-j * lt // ls) for j in range(1, (ls if count is None else count) + 1)]
