"""Online distillation workflows behind the layer-wise scripts (LAD, LAD-NO, partial LAD, ALP-KD, BERT-PKD).

The fine-tuned teacher runs beside the student in the one training engine (``fine_tune.engine.trainer``);
what differs between the scripts is only the method object (``fine_tune.methods``) and its flags.
max_seq_len, num_class and the training split come from the teacher experiment's config unless given.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from . import config as cfg
from .batching import Collator, cached_features
from .engine import distributed
from .engine.device import resolve_device
from .engine.trainer import forward, to_device
from .errors import UserError
from .io_utils import sha256_file
from .methods import ALPKD, LAD, LADNO, PKD, LayerwiseKD, PartialLAD
from .models.classifier import build_from_config, save_model_dir, student_config
from .models.init import check_copyable, copy_teacher_layers_at, teacher_layer_map
from .models.classifier import load_pretrained_config
from .plots import write_layer_map
from .tasks import get_task
from .teacher import Teacher, open_teacher
from .train import prepare, roots, run_training, seed_everything, start_experiment

GATED = ("lad", "lad_no", "partial_lad")


def parse_indices(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 2,4,6,8,10") from None


def fill_from_teacher(args: argparse.Namespace, teacher: Teacher) -> None:
    """max_seq_len, num_class and the training split default to the teacher's; a conflicting num_class is an error."""
    rec = teacher.record
    if args.num_class is None:
        args.num_class = rec.get("num_class", teacher.hf_config.num_labels)
    elif args.num_class != teacher.hf_config.num_labels:
        raise UserError(f"--num_class {args.num_class}: the teacher {teacher.exp.name} has {teacher.hf_config.num_labels} classes")
    if args.max_seq_len is None:
        args.max_seq_len = rec.get("max_seq_len", 128)
    if args.dataset is None:
        args.dataset = rec.get("dataset", "train")


def check_shapes(args: argparse.Namespace, teacher: Teacher, layer_matching: bool) -> None:
    if not layer_matching:
        return
    if args.d_model != teacher.hidden_size:
        raise UserError(f"--d_model {args.d_model} differs from the teacher's hidden size {teacher.hidden_size} "
                        f"({teacher.exp.name}); layer-wise distillation compares hidden states of equal width")
    if teacher.num_layers % args.num_hidden_layers:
        raise UserError(f"--num_hidden_layers {args.num_hidden_layers}: the teacher's {teacher.num_layers} layers are "
                        f"not a multiple of the student's")
    if args.num_hidden_layers > teacher.num_layers:
        raise UserError(f"--num_hidden_layers {args.num_hidden_layers} exceeds the teacher's {teacher.num_layers} layers")


def build_method(kind: str, args: argparse.Namespace, teacher: Teacher, gate_device: torch.device | None) -> LayerwiseKD:
    common = (args.num_hidden_layers, teacher.num_layers, args.hard_weight, args.soft_weight, args.softmax_temp, args.mu)
    padding = getattr(args, "padding", "max_length")  # dynamic: masked hidden losses and masked gate LayerNorm
    if kind in GATED:
        gate_settings = dict(lr=args.gate_lr, beta1=args.gate_beta1, beta2=args.gate_beta2, eps=args.gate_eps,
                             weight_decay=args.gate_weight_decay, max_norm=args.gate_max_norm,
                             total_step=args.gate_total_step or args.total_step,
                             warmup_step=args.warmup_step if args.gate_warmup_step is None else args.gate_warmup_step)
        kw = dict(d_model=teacher.hidden_size, seq_len=args.max_seq_len, gate_settings=gate_settings,
                  gate_device=gate_device, padding=padding)
        if kind == "lad":
            return LAD(*common, **kw)
        if kind == "lad_no":
            return LADNO(*common, **kw)
        return PartialLAD(*common, gate_indices=parse_indices(args.gate_indices, "--gate_indices"), **kw)
    if kind == "alp":
        return ALPKD(*common, mode=args.alp_exp, padding=padding)
    if kind == "pkd":
        return PKD(*common, loss=args.pkd_loss, strategy=args.pkd_strategy, padding=padding)
    raise ValueError(kind)


def init_layers(kind: str, method: LayerwiseKD, args: argparse.Namespace) -> list[tuple[int, int]]:
    """(student layer, pretrained teacher layer) pairs to copy, 1-based. ``--init_start`` overrides; otherwise
    student layer j <- teacher layer j * skip (the original), partial LAD: j <- G[j] for j <= |G| and the
    uncovered layers stay random (the original's quirk) unless ``--init_uncovered``."""
    ls, lt = args.num_hidden_layers, method.lt
    if args.init_start is not None:
        layers = teacher_layer_map(args.init_start, args.init_end, args.init_step, ls, lt)
        return list(enumerate(layers, 1))
    if kind == "partial_lad":
        pairs = [(j, idx) for j, (k, idx) in enumerate(method.mapping, 1) if k == "agg" or args.init_uncovered]
        return pairs
    skip = lt // ls
    return [(j, j * skip) for j in range(1, ls + 1)]


def placed(device_id: int | None, flag_name: str, student_device: torch.device, student_id: int | None) -> torch.device:
    """The teacher's / gates' device: the student's unless another index is asked for."""
    if device_id is None or device_id == student_id:
        return student_device
    return resolve_device(device_id, None, flag_name)


def dev_split(task) -> str | None:
    for split in task.splits:
        if split in task.labelled and split != task.train_split:
            return split
    return None


class LayerMapWriter:
    """At each checkpoint: the method's [L_s, L_t] contribution map averaged over a fixed sample of dev
    examples (the first ``map_examples`` rows), as PNG + JSON in the experiment folder and a TensorBoard image."""

    def __init__(self, method: LayerwiseKD, collator: Collator, count: int, teacher: torch.nn.Module,
                 student: torch.nn.Module, device: torch.device, teacher_device: torch.device, precision, folder,
                 tag: str, title: str, caption: str):
        self.method, self.collator, self.count = method, collator, count
        self.teacher, self.student = teacher, student
        self.device, self.teacher_device, self.precision = device, teacher_device, precision
        self.folder, self.tag, self.title, self.caption = folder, tag, title, caption

    @torch.no_grad()
    def matrix(self) -> np.ndarray:
        was_training = self.student.training
        self.student.eval()
        self.method.train(False)
        total, rows = None, 0
        try:
            for start in range(0, self.count, 32):
                idx = np.arange(start, min(self.count, start + 32))
                batch = to_device(self.collator(idx), self.device)
                tb = batch if self.teacher_device == self.device else to_device(batch, self.teacher_device)
                with self.precision.autocast():
                    s = forward(self.student, batch, True)
                    t = forward(self.teacher, tb, True)
                    m = self.method.layer_map(s, t) * len(idx)
                total = m if total is None else total + m
                rows += len(idx)
        finally:
            self.student.train(was_training)
            self.method.train(True)
        return total / rows

    def __call__(self, step: int, writer) -> None:
        m = self.matrix()
        labels = self.method.describe_mapping().replace("<-", " <- ").split(", ")
        if len(labels) != m.shape[0]:
            labels = [str(j) for j in range(1, m.shape[0] + 1)]
        write_layer_map(self.folder, step, m, f"{self.title} (step {step})", self.caption, labels, writer, self.tag)


MAP_CAPTIONS = {
    "lad": "Weight of teacher layer i in student layer j's target A_k ~ g_i * prod_{m=i+1..k}(1 - g_m), g = mean gate "
           "value over non-padding tokens and dimensions of the dev sample; ignores the gates' LayerNorm.",
    "lad_no": "Student layer j's target gate_j(T_lo, T_hi): weight g (mean gate value over non-padding tokens and "
              "dimensions of the dev sample) on the upper layer, 1 - g on the lower; ignores the gate's LayerNorm.",
    "alp": "Mean ALP-KD attention of each student layer over the teacher layers (non-padding tokens of the dev sample).",
}
MAP_CAPTIONS["partial_lad"] = MAP_CAPTIONS["lad"] + " Rows beyond the gate indices learn one raw teacher layer."


def run_online_distill(args: argparse.Namespace, kind: str) -> dict | None:
    """``kind``: lad, lad_no, partial_lad, alp or pkd."""
    cfg.validate_student(args)
    data_root, exp_root = roots(args)
    task = get_task(args.task)
    teacher = open_teacher(exp_root, args.teacher_exp, args.tmodel, args.task, args.tckpt)
    fill_from_teacher(args, teacher)
    if args.mu < 0:
        raise UserError(f"--mu must be >= 0, got {args.mu}")
    if getattr(args, "map_examples", 0) < 0:
        raise UserError(f"--map_examples must be >= 0, got {args.map_examples}")
    p = prepare(args)
    if task.name != teacher.record.get("task", task.name):
        raise UserError(f"--task {args.task}: the teacher was fine-tuned on {teacher.record.get('task')}")
    cfg.check_max_seq_len(args.max_seq_len, teacher.hf_config.max_position_embeddings, f"the teacher {teacher.exp.name}")
    check_shapes(args, teacher, layer_matching=True)
    if kind == "partial_lad" and args.student_indices is not None:
        given = parse_indices(args.student_indices, "--student_indices")
        if given != list(range(1, args.num_hidden_layers + 1)):
            print(f"note: --student_indices {args.student_indices} is ignored by partial LAD: every student layer learns",
                  file=sys.stderr)
    method = build_method(kind, args, teacher, gate_device=None)  # validates indices before anything is written
    data_file = task.path(data_root, args.dataset)
    examples = task.load(data_root, args.dataset, args.max_examples)
    source_hash = sha256_file(data_file)
    ptrain_ver = teacher.record.get("ptrain_ver")
    pairs = init_layers(kind, method, args)  # checked (and the pretrained folder found) before anything is written
    if pairs:
        if not ptrain_ver:
            raise UserError(f"{teacher.exp.config_path} records no ptrain_ver to initialise the student from")
        check_copyable(load_pretrained_config(ptrain_ver, teacher.hf_config.model_type), args.d_model, args.d_ff,
                       args.init_attn_only)
    other_devices = (("--tdevice_id", args.tdevice_id), ("--gate_device_id", getattr(args, "gate_device_id", None)))
    for flag_name, device_id in other_devices:
        if device_id is not None and device_id != args.device_id:
            resolve_device(device_id, None, flag_name, quiet=True)  # a CUDA index the machine lacks: refused now
    record = cfg.to_record(args)
    record.update(method=kind, ptrain_ver=ptrain_ver, teacher_experiment=teacher.exp.name,
                  teacher_checkpoint=f"{teacher.exp.name}/{teacher.checkpoint.name}", teacher_layers=teacher.num_layers,
                  hidden_mapping=method.describe_mapping())
    start = start_experiment(p, args, record, {str(data_file): source_hash})
    if not start.run:
        return None
    teacher_device = placed(args.tdevice_id, "--tdevice_id", p.device, args.device_id)
    gate_device = placed(getattr(args, "gate_device_id", None), "--gate_device_id", p.device, args.device_id)

    seed_everything(args.seed)
    tokenizer = teacher.tokenizer
    config = student_config(args.model, vocab_size=teacher.hf_config.vocab_size, num_class=args.num_class,
                            d_model=args.d_model, d_ff=args.d_ff, num_attention_heads=args.num_attention_heads,
                            num_hidden_layers=args.num_hidden_layers, type_vocab_size=args.type_vocab_size,
                            dropout=args.dropout, max_position_embeddings=teacher.hf_config.max_position_embeddings,
                            pad_token_id=tokenizer.pad_token_id, d_emb=args.d_emb)
    student = build_from_config(config)
    method = build_method(kind, args, teacher, gate_device)  # gates created after seeding: reproducible
    if pairs:
        copy_teacher_layers_at(student, ptrain_ver, pairs, attn_only=args.init_attn_only,
                               embeddings=args.init_embeddings)
        print("initialised student layers from " + str(ptrain_ver) + ": " + ", ".join(f"{s}<-{t}" for s, t in pairs),
              file=sys.stderr)
    if distributed.is_main():
        save_model_dir(p.exp.model_dir, student.config, tokenizer)
    teacher_model = teacher.build()
    print(f"{p.exp.name}: {kind}, teacher {teacher.exp.name} model-{teacher.step}.pt ({teacher.num_layers} layers), "
          f"mapping {method.describe_mapping() or 'logits only'}", file=sys.stderr)

    make_hook = None
    if args.map_examples and args.mu and kind in MAP_CAPTIONS:
        make_hook = layer_map_hook(kind, method, args, task, p, data_root, tokenizer, teacher_model, teacher_device)
    return run_training(p, student, method, tokenizer, examples, source_hash, args, args.dataset,
                        teacher=teacher_model if method.uses_teacher else None, teacher_device=teacher_device,
                        make_hook=make_hook, resume_step=start.resume_step)


def layer_map_hook(kind, method, args, task, p, data_root, tokenizer, teacher_model, teacher_device):
    """A ``make_hook`` for :func:`run_training`: the heat-map writer over the first ``--map_examples`` dev rows."""
    split = dev_split(task)
    path = task.path(data_root, split) if split else None
    if path is None or not path.is_file():
        print(f"note: no {split or 'dev'} split at {path}: no layer-contribution map", file=sys.stderr)
        return None
    dev = task.load(data_root, split, args.map_examples)
    features = cached_features(data_root / "cache", tokenizer, dev, args.max_seq_len, sha256_file(path))
    collator = Collator(features, tokenizer.pad_token_id, args.max_seq_len, args.padding)  # as in training

    def make(trainer):
        return LayerMapWriter(method, collator, len(features), teacher_model, trainer.student, p.device,
                              teacher_device, p.precision, p.exp.path, f"{args.task}/{args.dataset}/{args.model}/layer_map",
                              f"{p.exp.name}: teacher-layer contributions ({split} sample)", MAP_CAPTIONS[kind])
    return make
