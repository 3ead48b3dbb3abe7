"""Flag groups every entry script composes, so no script repeats another's argparse block.

Each group is a dataclass: its fields are the flags (name, type, default, help). An entry script calls
:func:`parse_args` with the groups it needs and gets an ``argparse.Namespace``. Bad flags give one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import UserError


def flag(default: Any = None, help: str = "", **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ExperimentFlags:
    experiment: str = flag(None, "experiment name; folder {experiment}_{model}_{task}", required=True)
    model: str = flag("bert", "model family", choices=("bert", "albert"))
    task: str = flag(None, "task", required=True, choices=("boolq", "qqp"))
    dataset: str = flag("train", "split (train/val/test for boolq, train/dev/test for qqp)")


@dataclass
class PathFlags:
    data_root: str = flag(None, "data root (default: env FT_DATA_ROOT, else <repo>/data/fine_tune)")
    exp_root: str = flag(None, "experiment root (default: env FT_EXP_ROOT, else <repo>/data/fine_tune_experiment)")
    max_examples: int = flag(None, "use only the first N rows of the split (smoke runs, tests)")
    overwrite: bool = flag(False, "replace an existing experiment (or logits data set) with a different config")


@dataclass
class DeviceFlags:
    device_id: int = flag(None, "CUDA device index; -1 = CPU (2021-era flag)")
    num_gpu: int = flag(None, "number of GPUs; 0 = CPU, >=1 = cuda:0 (2020-era flag)")
    amp: bool = flag(False, "mixed precision: fp16 autocast + GradScaler on CUDA (bf16 with --amp_dtype bf16); "
                     "on CPU bf16 when the processor has native bf16, else fp32 with a warning")
    amp_dtype: str = flag("fp16", "autocast dtype on CUDA", choices=("fp16", "bf16"))


@dataclass
class OptimFlags:
    num_class: int = flag(2, "number of classes")
    accum_step: int = flag(1, "micro-batches per optimizer step (each forward sees batch_size // accum_step)")
    batch_size: int = flag(32, "effective batch size per optimizer step")
    beta1: float = flag(0.9, "AdamW beta1")
    beta2: float = flag(0.999, "AdamW beta2")
    eps: float = flag(1e-8, "AdamW epsilon")
    weight_decay: float = flag(0.01, "AdamW weight decay (not on names containing 'bias' or 'LayerNorm.weight')")
    lr: float = flag(2e-5, "peak learning rate")
    max_norm: float = flag(1.0, "gradient clipping norm")
    total_step: int = flag(1000, "number of optimizer steps")
    warmup_step: int = flag(100, "linear warmup steps, then linear decay to 0 at total_step")
    ckpt_step: int = flag(500, "save model-{step}.pt every N optimizer steps (and at the end)")
    save_total_limit: int = flag(None, "keep only the newest K checkpoints (default: keep all, as the original)")
    log_step: int = flag(100, "TensorBoard scalars every N optimizer steps")
    dropout: float = flag(0.1, "dropout of encoder (hidden and attention) and classifier head")
    max_seq_len: int = flag(128, "maximum tokens per (text, text_pair)")
    seed: int = flag(42, "random seed (Python, NumPy, torch)")
    padding: str = flag("dynamic", "pad each batch to its longest member (dynamic) or to max_seq_len (max_length)",
                        choices=("dynamic", "max_length"))
    padding_free: str = flag("auto", "auto: BERT's position-wise layers run on the real tokens only, and attention "
                                     "in buckets of similar lengths, wherever no loss looks at padding positions "
                                     "(fine-tuning, logits KD, layer-wise losses under --padding dynamic), and the "
                                     "same layers over the padded grid elsewhere; cheaper dropout masks on CPU: the "
                                     "same model, fewer FLOPs; off: Hugging Face's padded forward",
                             choices=("auto", "off"))
    compile: bool = flag(False, "torch.compile the student's (and the teacher's) forward: pays on GPUs over long runs; "
                                "on the 2-core CPU measured here it did not (doc/performance.md). Float-rounding "
                                "changes only")
    group_by_length: bool = flag(False, "length-grouped micro-batches: each epoch's shuffle is cut into mega-batches "
                                        "of 50 micro-batches, each sorted by length, and the micro-batches shuffled, "
                                        "so dynamic padding pads little. Changes the training order and so the "
                                        "trajectory: off by default to stay faithful to the original")


@dataclass
class PretrainedFlags:
    ptrain_ver: str = flag(None, "pretrained model: a Hugging Face hub name or a local folder", required=True)


@dataclass
class StudentFlags:
    d_model: int = flag(768, "student hidden size")
    d_ff: int = flag(3072, "student feed-forward size")
    d_emb: int = flag(128, "student embedding size (ALBERT only)")
    num_attention_heads: int = flag(16, "student attention heads")
    num_hidden_layers: int = flag(6, "student layers")
    type_vocab_size: int = flag(2, "student token type vocabulary")
    init_start: int = flag(None, "initialise student layers from the teacher's pretrained layers "
                                 "range(init_start, init_end + 1, init_step), 1-based (off unless given)")
    init_end: int = flag(None, "last teacher layer (inclusive) for --init_start")
    init_step: int = flag(1, "teacher layer step for --init_start")
    init_attn_only: bool = flag(False, "with --init_start: copy only the self-attention weights (the original's 'attn_W only')")
    init_embeddings: bool = flag(False, "with the layer initialisation: also copy the pretrained teacher's embeddings "
                                        "(the original leaves them random; needs the teacher's widths)")


@dataclass
class DistilFlags:
    softmax_temp: float = flag(1.0, "temperature T of the soft loss")
    soft_weight: float = flag(1.0, "weight of T^2 * KL(teacher || student)")
    hard_weight: float = flag(1.0, "weight of the cross-entropy with the gold labels")


@dataclass
class TeacherFlags:
    teacher_exp: str = flag(None, "fine-tuned teacher experiment (folder {teacher_exp}_{tmodel}_{task})", required=True)
    tmodel: str = flag("bert", "teacher model family", choices=("bert", "albert"))
    tckpt: int = flag(None, "teacher checkpoint step (model-{tckpt}.pt)", required=True)
    tdevice_id: int = flag(None, "teacher's CUDA device index; -1 = CPU (default: the student's device)")


@dataclass
class LayerwiseFlags:
    mu: float = flag(1.0, "weight of the hidden-state loss, mu * sum_j MSE_j / L_s (0: online logits KD only)")
    init_uncovered: bool = flag(False, "partial LAD: also initialise the student layers not covered by "
                                       "--gate_indices (the original leaves them random)")
    map_examples: int = flag(64, "dev examples averaged for the layer-contribution heat-map at each checkpoint "
                                 "(0: no map)")


@dataclass
class GateFlags:
    gate_lr: float = flag(1e-5, "gate AdamW peak learning rate")
    gate_beta1: float = flag(0.9, "gate AdamW beta1")
    gate_beta2: float = flag(0.999, "gate AdamW beta2")
    gate_eps: float = flag(1e-8, "gate AdamW epsilon")
    gate_weight_decay: float = flag(0.01, "gate AdamW weight decay (not on biases and LayerNorm weights)")
    gate_max_norm: float = flag(1.0, "gradient clipping norm, per gate")
    gate_total_step: int = flag(None, "gate schedule length (default: --total_step)")
    gate_warmup_step: int = flag(None, "gate linear warmup steps (default: --warmup_step)")
    gate_device_id: int = flag(None, "gates' CUDA device index; -1 = CPU (default: the student's device)")


@dataclass
class ProbingFlags:
    probing_exp: str = flag(None, "probing experiment", required=True, choices=("partial_lad",))
    gate_indices: str = flag("2,4,6,8,10", "partial LAD: comma-separated gate (teacher layer) indices, 1-based, "
                                           "whose aggregation student layers 1..|G| learn")
    student_indices: str = flag(None, "student layers that learn (partial LAD uses every student layer; "
                                      "accepted for the seed commands)")


@dataclass
class AlpFlags:
    alp_exp: str = flag("alp-kd-hidden", "ALP-KD variant",
                        choices=("alp-kd", "alp-kd-hidden", "alp-kd-hidden-v2"))


@dataclass
class PkdFlags:
    pkd_loss: str = flag("hidden_mse", "hidden_mse: full-sequence MSE on every student layer (the original's "
                                       "'our implementation'); normalized_cls: Sun et al. 2019, normalised [CLS] "
                                       "states of student layers 1..L_s-1", choices=("hidden_mse", "normalized_cls"))
    pkd_strategy: str = flag("skip", "teacher layers: skip (j * L_t/L_s) or last (PKD-last: the top layers)",
                             choices=("skip", "last"))


# The original layer-wise scripts' argparse defaults (shared/reference/original_methods.md). Their commands
# pass no --max_seq_len / --num_class / --dataset: those come from the teacher's config.
LAYERWISE_DEFAULTS = dict(soft_weight=0.2, hard_weight=0.8, softmax_temp=1.0, mu=1.0, lr=3e-5, num_attention_heads=16,
                          total_step=50000, warmup_step=10000, gate_lr=1e-5, padding="max_length", dataset=None,
                          max_seq_len=None, num_class=None)
# Help texts that differ for the layer-wise scripts.
LAYERWISE_HELP = dict(
    padding="max_length: every batch padded to max_seq_len, the original (hidden MSE over padding positions "
            "too, LAD's gate LayerNorm over [max_seq_len, D]); dynamic: each batch padded to its longest member, "
            "faster, with hidden losses masked to the real tokens and a masked gate LayerNorm; changes results "
            "(doc/methods.md)")


@dataclass
class EvalFlags:
    batch_size: int = flag(128, "evaluation batch size")
    ckpt: int = flag(0, "first checkpoint step to evaluate (all later ones too)")
    save_predictions: bool = flag(False, "write per-example probabilities and predictions for every checkpoint")


@dataclass
class PredictFlags:
    ckpt: str = flag(None, "checkpoint: a step, 'last' (the newest checkpoint; the default) or 'best' (best "
                           "accuracy on --select_on, from run_fine_tune_eval.py's evaluation of that split)")
    select_on: str = flag(None, "split whose evaluation chooses --ckpt best (default: val for boolq, dev for qqp)")


@dataclass
class ExportFlags:
    out: str = flag(None, "output folder (default: <experiment folder>/hf-model-<step>)")


@dataclass
class ResultsFlags:
    task: str = flag(None, "task", required=True, choices=("boolq", "qqp"))
    exp_root: str = flag(None, "experiment root (default: env FT_EXP_ROOT, else <repo>/data/fine_tune_experiment)")
    experiments: str = flag(None, "comma-separated globs of experiment folders or names (default: every evaluated one)")
    splits: str = flag(None, "comma-separated reported splits (default: every evaluated labelled split)")
    rule: str = flag("best", "checkpoint rule: best (best on --select_on, by default on the reported split itself: "
                             "the original's rule) or last", choices=("best", "last"))
    select_on: str = flag(None, "split that chooses the checkpoint for every reported split (e.g. val / dev)")
    compare: str = flag(None, "two experiment folders A B: paired bootstrap of their accuracy difference", nargs=2)
    compare_split: str = flag(None, "split of --compare (default: val for boolq, dev for qqp)")
    resamples: int = flag(10000, "bootstrap resamples")
    bootstrap_seed: int = flag(0, "bootstrap random seed")
    out: str = flag(None, "markdown file to write (default: <exp_root>/results-<task>.md)")


def parse_layerwise(prog: str, description: str, method_groups: Sequence[type],
                    argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags of a layer-wise script: the common groups, the method's own, the original's defaults."""
    groups = [ExperimentFlags, TeacherFlags, StudentFlags, DistilFlags, LayerwiseFlags, *method_groups, OptimFlags,
              DeviceFlags, PathFlags]
    return parse_args(prog, description, groups, argv, overrides=LAYERWISE_DEFAULTS, helps=LAYERWISE_HELP)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser(prog: str, description: str, groups: Sequence[type], overrides: dict[str, Any] | None = None,
                 helps: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """A parser with the flags of ``groups``; ``overrides`` changes defaults (per-script defaults), ``helps``
    help texts."""
    overrides, helps = overrides or {}, helps or {}
    parser = _Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    seen: set[str] = set()
    for group in groups:
        g = parser.add_argument_group(group.__name__.replace("Flags", "").lower())
        for f in dataclasses.fields(group):
            if f.name in seen:  # a later group overrides an earlier field of the same name
                continue
            seen.add(f.name)
            meta = dict(f.metadata)
            help_ = helps.get(f.name, meta.pop("help", ""))
            meta.pop("help", None)
            default = overrides.get(f.name, f.default)
            kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float, "bool": bool}[f.type]
            if kind is bool:
                g.add_argument(f"--{f.name}", action="store_true", default=default, help=help_)
            else:
                if meta.get("required") and f.name in overrides:
                    meta.pop("required")
                g.add_argument(f"--{f.name}", type=kind, default=default, help=help_, **meta)
    return parser


def parse_args(prog: str, description: str, groups: Sequence[type], argv: Sequence[str] | None = None,
               overrides: dict[str, Any] | None = None, helps: dict[str, str] | None = None) -> argparse.Namespace:
    parser = build_parser(prog, description, groups, overrides, helps)
    return parser.parse_args(argv)


def run_main(main, argv: Sequence[str] | None = None) -> int:
    """Run an entry point: a :class:`UserError` becomes one line on stderr and exit status 2. Under torchrun
    only rank 0 prints to stdout, and at the end the process group is closed and the worker exits at once with
    its status (engine/distributed.exit_process says why)."""
    from .engine import distributed

    finished, closed = False, False
    try:
        distributed.silence_other_ranks()
        main(argv)
        finished = True
        code = 0
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        code = e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    finally:
        closed = distributed.close(synchronize=finished)
    if closed:
        distributed.exit_process(code)
    return code
