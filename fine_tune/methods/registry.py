"""Every method by name: ``config.json``'s ``method`` field and the entry scripts find them here.

Adding a method is one new file in ``fine_tune/methods/`` (a :class:`~fine_tune.methods.base.Method` subclass
with its ``name``, ``flag_groups``, ``build`` and ``losses``) and one line in ``METHODS`` below
(doc/methods.md, "Adding a method").
"""

from __future__ import annotations

from ..errors import UserError, did_you_mean
from .alp import ALPKD
from .base import Method
from .lad import LAD, LADNO, PartialLAD
from .logits_kd import HardLabel, OfflineLogitsKD
from .minilm import MiniLM
from .pkd import PKD
from .recipe import RecipeKD
from .tinybert import TinyBERT

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        HardLabel,  # run_fine_tune.py
        OfflineLogitsKD,  # run_fine_tune_distill.py
        LAD,  # run_lad_distil.py
        LADNO,  # run_lad_no_distil.py
        PartialLAD,  # run_probing_lad.py
        ALPKD,  # run_alp_distil.py
        PKD,  # run_pkd_distill.py
        TinyBERT,  # run_tinybert_distil.py
        MiniLM,  # run_minilm_distil.py
        RecipeKD,  # run_distil.py --recipe FILE
    )
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(
            f"unknown method {name!r}; {did_you_mean(name, METHODS)}methods: {', '.join(METHODS)}"
        ) from None


def extendable_methods() -> list[str]:
    """The distillation methods a recipe's terms can be added to (a recipe's ``method: NAME``): every online
    method but the recipe itself."""
    return [name for name, cls in METHODS.items() if cls.online and cls is not RecipeKD]
