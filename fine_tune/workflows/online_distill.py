"""Online distillation behind the layer-wise scripts (LAD, LAD-NO, partial LAD, ALP-KD, BERT-PKD).

The fine-tuned teacher runs beside the student in the one training engine; what differs between the scripts
is only the method (found by name in ``fine_tune.methods.registry``) and its flags. max_seq_len, num_class and
the training split come from the teacher experiment's config unless given.
"""

from __future__ import annotations

import sys

from .. import config as cfg
from ..engine.device import resolve_placement
from ..engine.seeding import seed_everything
from ..errors import UserError
from ..io_utils import sha256_file
from ..locking import releases_locks
from ..methods import get_method
from ..methods.lad import parse_indices
from ..models.classifier import check_same_tokenisation, weight_file_hashes
from ..models.families import usable_positions
from ..tasks import get_task
from ..teacher import Teacher, open_hf_teacher, open_teacher
from ..experiment import roots
from .layer_map import layer_map_hook
from .start import prepare, start_experiment
from .student import build_student, check_initialisation, print_notes, resolve_pretrained_student
from .training import run_training


def resolve_from_teacher(flags, teacher: Teacher, task):
    """The flags with max_seq_len, num_class and the training split filled in from the teacher's config where
    not given (a Hugging Face teacher records none: --max_seq_len is then required); a num_class other than the
    teacher's is an error."""
    rec = teacher.record
    num_class = flags.classifier.num_class
    if num_class is None:
        num_class = rec.get("num_class", teacher.hf_config.num_labels)
    elif num_class != teacher.hf_config.num_labels:
        raise UserError(f"--num_class {num_class}: the teacher {teacher.name} has {teacher.hf_config.num_labels} classes")
    max_seq_len = flags.batching.max_seq_len or rec.get("max_seq_len")
    if max_seq_len is None:
        raise UserError(f"--teacher_hf {teacher.name!r}: give --max_seq_len (a teacher fine-tuned elsewhere records "
                        f"none)")
    dataset = flags.experiment.dataset or rec.get("dataset") or task.train_split
    return flags.replace(classifier={"num_class": num_class}, batching={"max_seq_len": max_seq_len},
                         experiment={"dataset": dataset})


def check_shapes(flags, teacher: Teacher, method_cls) -> None:
    """The student has at most the teacher's layers, and divides them for the methods that skip L_t / L_s
    teacher layers exactly (LAD-NO, partial LAD; the others spread ceil(j L_t / L_s)); widths may differ (a learned
    projection, models/projection.py)."""
    st = flags.student
    if st.num_hidden_layers > teacher.num_layers:
        raise UserError(f"--num_hidden_layers {st.num_hidden_layers} exceeds the teacher's {teacher.num_layers} layers")
    if method_cls.needs_layer_multiple and teacher.num_layers % st.num_hidden_layers:
        raise UserError(f"--num_hidden_layers {st.num_hidden_layers}: the teacher's {teacher.num_layers} layers are "
                        f"not a multiple of the student's")


def open_any_teacher(flags, exp_root, task) -> Teacher:
    """``--teacher_exp``/``--tckpt`` (a toolkit experiment) or ``--teacher_hf`` (a Hugging Face classifier)."""
    t, e = flags.teacher, flags.experiment
    if t.teacher_hf is not None:
        return open_hf_teacher(t.teacher_hf, task, t.teacher_label_map)
    return open_teacher(exp_root, t.teacher_exp, t.tmodel, e.task, t.tckpt)


@releases_locks
def run_online_distill(flags, method_name: str) -> dict | None:
    """Distil a student from a fine-tuned teacher with the registered method ``method_name``."""
    method_cls = get_method(method_name)
    data_root, exp_root = roots(flags.paths)
    e, t = flags.experiment, flags.teacher
    task = get_task(e.task, data_root)
    teacher = open_any_teacher(flags, exp_root, task)
    task.check_trained_labels(teacher.record, f"the teacher {teacher.name}")
    flags = resolve_from_teacher(flags, teacher, task)
    notes: list[str] = []  # printed once the run starts
    flags, student_tokenizer = resolve_pretrained_student(flags, notes)
    e, st = flags.experiment, flags.student
    p = prepare(flags)
    if task.name != teacher.record.get("task", task.name):
        raise UserError(f"--task {e.task}: the teacher was fine-tuned on {teacher.record.get('task')}")
    cfg.check_max_seq_len(flags.batching.max_seq_len, usable_positions(teacher.hf_config), f"the teacher {teacher.name}")
    cfg.check_room_for_text(flags.batching.max_seq_len, teacher.tokenizer)
    check_shapes(flags, teacher, method_cls)
    if flags.has("probing") and flags.probing.student_indices is not None:
        given = parse_indices(flags.probing.student_indices, "--student_indices")
        if given != list(range(1, st.num_hidden_layers + 1)):
            print(f"note: --student_indices {flags.probing.student_indices} is ignored by partial LAD: every student "
                  f"layer learns", file=sys.stderr)
    method = method_cls.from_flags(flags, teacher)  # validates its mapping before anything is written
    method.check_models(teacher.hf_config, student_family=e.model)
    data_file = task.path(p.data_root, e.dataset)
    examples = task.load(p.data_root, e.dataset, flags.paths.max_examples)
    if student_tokenizer is not None:  # token-level losses need one tokenisation
        check_same_tokenisation(teacher.tokenizer, student_tokenizer, examples, teacher.name, st.student_ptrain_ver)
    source_hash = sha256_file(data_file)
    ptrain_ver = teacher.record.get("ptrain_ver")
    pairs = method.init_pairs(flags)  # checked (and the pretrained folder found) before anything is written
    if pairs and teacher.hf_config.model_type != e.model:
        if st.init_start is not None:
            raise UserError(f"--init_start: the teacher's pretrained layers are {teacher.hf_config.model_type!r} "
                            f"layers, the student a {e.model!r} model")
        notes.append(f"the student ({e.model}) cannot take the {teacher.hf_config.model_type} teacher's pretrained "
                     f"layers: they start random (--student_ptrain_ver gives a pretrained student)")
        pairs = []
    if pairs and not ptrain_ver and st.init_start is None:
        notes.append(f"{teacher.name} records no pretrained model (ptrain_ver) to copy the student's layers from: "
                     f"they start random (--student_ptrain_ver gives a pretrained student)")
        pairs = []
    if method.needs_projection and st.student_ptrain_ver is None and st.init_start is None:
        notes.append(f"the student's width {st.d_model} differs from the teacher's {teacher.hidden_size}: its layers "
                     f"start random (no teacher layer fits), and its hidden states reach the teacher's width through a "
                     f"learned projection")
    check_initialisation(pairs, ptrain_ver, teacher.hf_config.model_type, st,
                         f"{teacher.name}: no ptrain_ver recorded to initialise the student from (give "
                         f"--student_ptrain_ver, or a student of the teacher's family started from --init_start)")
    gate_device_id = flags.gate.gate_device_id if flags.has("gate") else None
    for flag_name, device_id in (("--tdevice_id", t.tdevice_id), ("--gate_device_id", gate_device_id)):
        # a CUDA index (or, under torchrun, a per-rank slot) the machine lacks: refused before anything is written
        resolve_placement(device_id, flag_name, p.device, flags.device.device_id, quiet=True)
    record = dict(flags.record(), method=method.name, ptrain_ver=ptrain_ver, teacher_experiment=teacher.name,
                  teacher_checkpoint=(f"{teacher.name}/{teacher.checkpoint.name}" if teacher.checkpoint is not None
                                      else teacher.source),
                  teacher_layers=teacher.num_layers, teacher_label_order=teacher.label_order,
                  hidden_mapping=method.describe_mapping(), **method.record())
    if t.teacher_hf is not None:
        record["tmodel"] = teacher.hf_config.model_type
    inputs = {str(data_file): source_hash, **teacher.input_hashes(),
              **(weight_file_hashes(ptrain_ver) if pairs else {}),
              **(weight_file_hashes(st.student_ptrain_ver) if st.student_ptrain_ver else {})}
    start = start_experiment(p, flags, record, inputs)
    if not start.run:
        return None
    print_notes(notes)
    method.continue_legacy(start.legacy)
    teacher_device = resolve_placement(t.tdevice_id, "--tdevice_id", p.device, flags.device.device_id)
    gate_device = resolve_placement(gate_device_id, "--gate_device_id", p.device, flags.device.device_id)

    seed_everything(flags.run.seed)
    tokenizer = student_tokenizer or teacher.tokenizer  # the same tokenisation (checked above)
    student = build_student(p, flags, vocab_size=teacher.hf_config.vocab_size, num_class=flags.classifier.num_class,
                            max_positions=teacher.hf_config.max_position_embeddings, tokenizer=tokenizer,
                            source=ptrain_ver, pairs=pairs, method=method, method_device=gate_device)
    teacher_model = teacher.build()
    print(f"{p.exp.name}: {method.name}, teacher {teacher.describe()} ({teacher.num_layers} layers), mapping "
          f"{method.describe_mapping() or 'logits only'}"
          f"{', learned width projection' if method.projection is not None else ''}", file=sys.stderr)

    make_hook = None
    if flags.layerwise.map_examples and flags.layerwise.mu and method.map_caption:
        make_hook = layer_map_hook(method, flags, task, p, tokenizer, teacher_model, teacher_device)
    return run_training(p, flags, student, method, tokenizer, examples,
                        teacher=teacher_model if method.uses_teacher else None, teacher_device=teacher_device,
                        make_hook=make_hook, resume_step=start.resume_step)
