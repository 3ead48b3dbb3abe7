"""Student distillation from a logits data set (``run_fine_tune_distill.py``): the teacher's logits travel in
the batch; the student is built from its flags."""

from __future__ import annotations

from .. import config as cfg
from ..engine.seeding import seed_everything
from ..errors import UserError
from ..locking import releases_locks
from ..methods import get_method
from ..models.classifier import load_pretrained_config, load_tokenizer, weight_file_hashes
from ..models.init import check_copyable, teacher_layer_map
from ..tasks.logits import check_teacher_unchanged, read_logits
from .start import prepare, start_experiment
from .student import build_student, print_notes, resolve_pretrained_student
from .training import run_training


@releases_locks
def run_offline_distill(flags) -> dict | None:
    e, st = flags.experiment, flags.student
    p = prepare(flags)
    logits = read_logits(p.data_root, e.dataset, e.task)
    meta = logits.meta
    p.task.check_trained_labels(meta, f"the logits data set {e.dataset!r}")
    check_teacher_unchanged(meta, p.exp.root, e.dataset)
    classes = logits.logits.shape[1]
    if flags.classifier.num_class is None:  # resolved from the logits data set, recorded in config.json
        if classes != p.task.num_class:
            raise UserError(f"the logits data set {e.dataset!r} has {classes} classes, {e.task} has "
                            f"{p.task.num_class}")
        flags = flags.replace(classifier={"num_class": classes})
    elif flags.classifier.num_class != classes:
        raise UserError(f"--num_class {flags.classifier.num_class}: the logits data set has {classes} classes")
    # the student: built from its flags with the logits set's tokenizer (of any family: the teacher's tokenizer
    # only turns text into ids), or --student_ptrain_ver with its own tokenizer (logits are per row, so any
    # tokenisation learns from them)
    notes: list[str] = []  # printed once the run starts
    flags, student_tokenizer = resolve_pretrained_student(flags, notes)
    st = flags.student
    max_examples = flags.paths.max_examples
    examples = logits.examples[:max_examples] if max_examples else logits.examples
    teacher_logits = logits.logits[: len(examples)]
    max_seq_len = flags.batching.max_seq_len
    max_positions = max(512, max_seq_len) if meta.get("max_position_embeddings") is None else meta["max_position_embeddings"]
    if student_tokenizer is None:  # a pretrained student's positions were checked by resolve_pretrained_student
        cfg.check_max_seq_len(max_seq_len, max_positions, "the student (teacher's position table)")
    record = dict(flags.record(), ptrain_ver=meta.get("ptrain_ver"), teacher_experiment=meta.get("teacher_experiment"),
                  teacher_checkpoint=meta.get("checkpoint"), logits_split=meta.get("split"))
    source_hash = meta["logits_sha256"]
    tokenizer = student_tokenizer or load_tokenizer(logits.tokenizer_dir)
    cfg.check_room_for_text(max_seq_len, tokenizer)
    source = meta.get("ptrain_ver")
    if st.init_embeddings and st.init_start is None:
        raise UserError("--init_embeddings belongs to the layer initialisation: give --init_start/--init_end too")
    pairs: list[tuple[int, int]] = []
    if st.init_start is not None:  # checked (and the pretrained folder found) before anything is written
        if not source:
            raise UserError("--init_start: the logits data set records no pretrained teacher (ptrain_ver) to copy from")
        pre_config = load_pretrained_config(source, e.model)
        layers = teacher_layer_map(st.init_start, st.init_end, st.init_step, st.num_hidden_layers,
                                   pre_config.num_hidden_layers)
        pairs = list(enumerate(layers, 1))
        check_copyable(pre_config, st.d_model, st.d_ff, st.init_attn_only)
    method = get_method("offline_logits_kd").from_flags(flags)
    inputs = {str(logits.data_file): source_hash, **(weight_file_hashes(source) if pairs else {}),
              **(weight_file_hashes(st.student_ptrain_ver) if st.student_ptrain_ver else {})}
    start = start_experiment(p, flags, record, inputs)
    if not start.run:
        return None
    print_notes(notes)
    seed_everything(flags.run.seed)
    student = build_student(p, flags, vocab_size=meta.get("vocab_size") or len(tokenizer),
                            num_class=flags.classifier.num_class, max_positions=max_positions, tokenizer=tokenizer,
                            source=source, pairs=pairs, method=method)
    return run_training(p, flags, student, method, tokenizer, examples, teacher_logits=teacher_logits,
                        resume_step=start.resume_step)

