"""Carrying out a training run's plan (:class:`fine_tune.plan.RunPlan`): one :func:`run` for fine-tuning, offline
and online distillation.

* ``start.py``: the experiment folder (config guard, lock, resume or finished, ``--overwrite``)
* ``student.py``: the model of the plan, its method's own parameters, the pretrained layers, the model folder
* ``training.py``: tokenisation, collator, training forward and the one engine (``fine_tune.engine.trainer``)
* ``layer_map.py``: the layer-contribution heat-map of the layer-wise methods
"""

from __future__ import annotations

from ..engine import distributed
from ..engine.device import resolve_placement
from ..engine.seeding import seed_everything
from ..errors import UserError
from ..locking import releases_locks
from ..plan import RunPlan
from ..plan.types import applies_devices
from ..progress import say
from .layer_map import layer_map_writer
from .start import remove_new_experiment, start_experiment
from .student import build_model, print_notes
from .training import run_training


@releases_locks
@applies_devices
def run(plan: RunPlan) -> dict | None:
    """Start the experiment (or resume it, or find it finished: None), build the model and the method's
    parameters under the run's seed, and train; from start to end under the plan's process-wide settings
    (``--ddp_timeout``, ``--deterministic``: plan/types.Devices.applied)."""
    start = start_experiment(plan)
    if not start.run:
        return None
    print_notes(plan.notes)
    d, method = plan.devices, plan.method
    device, precision = d.resolve(quiet=distributed.is_main())  # rank 0 said its warnings at the start
    teacher_device = resolve_placement(d.teacher_device_id, "--tdevice_id", device, d.device_id)
    gate_device = resolve_placement(d.gate_device_id, "--gate_device_id", device, d.device_id)
    seed_everything(plan.training.seed)
    try:  # a new experiment whose weights fail to load leaves nothing behind
        model = build_model(
            plan.model, method, plan.tokenizer, plan.exp, device, gate_device, label_names=plan.task.label_names
        )
        teacher = plan.teacher.build() if plan.teacher is not None else None
    except (UserError, OSError):
        remove_new_experiment(plan.exp, start)
        raise
    if teacher is not None:
        say(
            f"{plan.exp.name}: {method.name}, teacher {plan.teacher.summary()}, "
            f"mapping {method.describe_mapping() or 'logits only'}"
            f"{', learned width projection' if getattr(method, 'projection', None) is not None else ''}"
        )
    on_checkpoint = None
    if teacher is not None:
        on_checkpoint = layer_map_writer(plan, method, teacher, model, device, teacher_device, precision)
    return run_training(
        plan,
        model,
        method,
        device,
        precision,
        teacher=teacher if method.uses_teacher else None,
        teacher_device=teacher_device,
        on_checkpoint=on_checkpoint,
        resume_step=start.resume_step,
        config_sha256=start.config_sha256,
    )
