"""The run plan: the one place where parsed flags become what a run needs.

``parse -> plan -> run``: an entry script parses its flags (:mod:`fine_tune.cli`), a planner here resolves them
once into a frozen :class:`RunPlan` (the task with its definition, the data and its content hashes, the tokenizer,
the teacher, the student, the method built complete, the engine's settings, the devices asked for, the record
``config.json`` will hold) and checks every input on the way, and :func:`fine_tune.run.run` carries the plan out.
Nothing is written while planning: a refused command leaves no trace. Below the plan no function sees the flags.

* :mod:`.training`: ``plan_fine_tune`` (``run_fine_tune.py``), ``plan_offline_distill``
  (``run_fine_tune_distill.py``), ``plan_online_distill`` (``run_distil.py --method NAME`` and the layer-wise
  scripts)
* :mod:`.inference`: the scripts that use a trained experiment: ``plan_eval`` (``run_fine_tune_eval.py``),
  ``plan_gen_logits``, ``plan_prediction``, ``plan_export``, ``plan_submission``, ``plan_results``
"""

from .types import Devices, LayerMapPlan, PretrainedModel, RunPlan, Split, StudentModel, TrainingEvaluation

__all__ = ["Devices", "LayerMapPlan", "PretrainedModel", "RunPlan", "Split", "StudentModel", "TrainingEvaluation"]
