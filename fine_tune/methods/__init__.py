"""Methods: small objects that turn (batch, student outputs, teacher outputs) into named loss parts, found by
name in :mod:`fine_tune.methods.registry`.

A method never touches an optimiser or a file; the engine (``fine_tune.engine.trainer``) does.
"""

from .alp import ALPKD
from .base import Method, MethodSettings, StudentShape
from .lad import LAD, LADNO, PartialLAD
from .layerwise import LayerwiseKD
from .logits_kd import HardLabel, OfflineLogitsKD, logits_kd_loss
from .minilm import MiniLM
from .pkd import PKD
from .registry import METHODS, get_method
from .tinybert import TinyBERT

__all__ = [
    "Method",
    "MethodSettings",
    "StudentShape",
    "HardLabel",
    "OfflineLogitsKD",
    "logits_kd_loss",
    "LayerwiseKD",
    "LAD",
    "LADNO",
    "PartialLAD",
    "ALPKD",
    "PKD",
    "TinyBERT",
    "MiniLM",
    "METHODS",
    "get_method",
]
