"""Methods: small objects that turn (batch, student outputs, teacher outputs) into named loss parts, found by
name in :mod:`fine_tune.methods.registry`.

A method never touches an optimiser or a file; the engine (``fine_tune.engine.trainer``) does.
"""

from .base import Method, MethodSettings, StudentShape
from .alp import ALPKD
from .lad import LAD, LADNO, PartialLAD
from .layerwise import LayerwiseKD
from .logits_kd import HardLabel, OfflineLogitsKD, logits_kd_loss
from .minilm import MiniLM
from .pkd import PKD
from .tinybert import TinyBERT
from .registry import METHODS, get_method

__all__ = ["Method", "MethodSettings", "StudentShape", "HardLabel", "OfflineLogitsKD", "logits_kd_loss", "LayerwiseKD", "LAD", "LADNO", "PartialLAD",
           "ALPKD", "PKD", "TinyBERT", "MiniLM", "METHODS", "get_method"]
