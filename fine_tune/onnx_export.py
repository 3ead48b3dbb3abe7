"""``export_model.py --format onnx [--quantize int8]``: an experiment checkpoint as an ONNX model, checked
against PyTorch on the task's dev rows before it is kept.

The folder (default ``<experiment folder>/onnx-model-<step>/``) holds ``model.onnx`` (inputs ``input_ids``,
``attention_mask`` and, for models that read token types, ``token_type_ids``, all int64 ``[batch, sequence]``;
output ``logits`` float32 ``[batch, num_labels]``; batch and sequence axes dynamic; fp32), with ``--quantize int8``
also ``model.int8.onnx`` (ONNX Runtime's ``quantize_dynamic`` of ``model.onnx``: int8 weights with one scale per
output channel, activations quantized at run time), the tokenizer (``model_max_length`` = the experiment's ``max_seq_len``), the model's ``config.json``
(``id2label`` / ``label2id`` as the Hugging Face export names them) and ``export.json``.

The graphs: ``torch.onnx.export``'s TorchScript exporter writes the model in eval mode (Hugging Face's eager
attention, whose pattern the optimiser recognises) at opset :data:`OPSET`: the plain graph, standard ONNX ops only.
ONNX Runtime's transformer optimiser (``onnxruntime.transformers.optimizer.optimize_model``, ``model_type``
:data:`OPTIMIZER_MODEL_TYPE`, offline fusions only: ``opt_level`` 0, the session applies its own graph optimisations
when it loads the file) fuses it into ONNX Runtime's contrib ops (Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization) with the raw 0/1 attention mask as the Attention input (any mask, not only right padding).
When attention is fused in every encoder layer and the fused graph passes the check below, it is ``model.onnx`` and
the plain graph is kept beside it as ``model.plain.onnx`` (for runtimes other than ONNX Runtime); otherwise (ALBERT's
shared layer, DeBERTa-v2's disentangled attention) ``model.onnx`` is the plain graph and one printed line says why.

The check: the task's dev split (its ``dev_split``: ``dev`` for QQP, ``val`` for BoolQ; all rows, or the first
``--max_examples``) runs through PyTorch (:func:`fine_tune.evaluate.predict_logits`, fp32 on the CPU) and through
ONNX Runtime (``CPUExecutionProvider``) in the same batches (:data:`BATCH_SIZE` rows in length order, each padded
to its longest row). Every logit must satisfy

    |onnx - pytorch| <= ATOL + RTOL * |pytorch|        (ATOL = RTOL = 1e-4)

else the export is refused with one line naming the largest difference, and nothing is left in the output folder
(an earlier export there stays as it was); the plain graph is checked first, then the fused one. The int8 model
has no tolerance: its metrics and its agreement with the
fp32 predictions (the share of rows whose predicted class is the same; null for a regression task) are
reported. Speed (examples/s) is measured on the same rows and batches, forward passes only
(tokenisation and padding excluded), PyTorch and ONNX Runtime on the same number of threads
(``torch.get_num_threads()``); the median of three passes when one pass of every model takes little time (under
:data:`CHEAP_SECONDS` together), else of the one pass.

``onnx`` and ``onnxruntime`` are imported here only, so the rest of the toolkit runs without them.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import torch

from .batching import Collator, sequential_batches
from .engine.device import Precision
from .errors import UserError
from .evaluate import metrics, predict_logits
from .models.forward import reads_token_types
from .progress import progress

if TYPE_CHECKING:
    from onnxruntime import InferenceSession  # (no type information: Any to the checker)
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from .batching import Features
    from .evaluate import LoadedExperiment
    from .tasks.task import Task

ATOL = 1e-4  # absolute tolerance on every logit, ONNX Runtime fp32 against PyTorch fp32
RTOL = 1e-4  # relative tolerance (times |PyTorch logit|)
OPSET = 17  # LayerNormalization is one op from opset 17 on
BATCH_SIZE = 32  # rows per batch of the check and the speed measurement
CHEAP_SECONDS = 10.0  # one pass of every model together under this: three passes each, their median
PASSES = 3
ONNX_FILE, INT8_FILE, PLAIN_FILE = "model.onnx", "model.int8.onnx", "model.plain.onnx"
OPTIMIZER_MODEL_TYPE = "bert"  # the optimiser's fusions for BERT-like encoders (post-LayerNorm, absolute positions)
OPTIMIZER_OPT_LEVEL = 0  # offline fusions only: no hardware-specific session optimisations baked into the file
ATTENTION_OPS = ("Attention", "MultiHeadAttention")  # the optimiser's fused attention


def input_names(model: torch.nn.Module) -> list[str]:
    """The ONNX model's inputs: ``token_type_ids`` only for a model that reads token types (models/forward.py)."""
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if reads_token_types(model) else [])


class _LogitsOnly(torch.nn.Module):
    """The classifier as a function of its input tensors (positional, in :func:`input_names` order) to logits."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)), return_dict=True).logits


class _ForwardTimer:
    """Seconds spent inside ``model``'s forward (hooks), so a pass through predict_logits is timed without its
    padding and batching work."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.seconds, self._start = model, 0.0, 0.0

    def __enter__(self) -> _ForwardTimer:
        self._handles = [self.model.register_forward_pre_hook(self._pre), self.model.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self._start = time.perf_counter()

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.seconds += time.perf_counter() - self._start


def _pytorch_pass(le, features: Features) -> tuple[np.ndarray, float]:
    """The toolkit's logits (fp32, CPU) and the seconds of the forward passes."""
    with _ForwardTimer(le.model) as timer:
        logits = predict_logits(
            le.model,
            features,
            le.tokenizer.pad_token_id,
            le.config["max_seq_len"],
            BATCH_SIZE,
            torch.device("cpu"),
            Precision("cpu", None),
            desc="PyTorch",
        )
    return logits, timer.seconds


def _batches(le, features: Features, names: list[str]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The batches predict_logits forms (same rows, same per-batch padding), as ONNX Runtime feeds."""
    collator = Collator(features, le.tokenizer.pad_token_id, le.config["max_seq_len"], "dynamic")
    out = []
    for rows in sequential_batches(len(features), BATCH_SIZE, features.lengths()):
        batch = collator(rows)
        out.append((np.asarray(rows), {k: batch[k].numpy().astype(np.int64) for k in names}))
    return out


def _session(path: Path, threads: int) -> InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - one line, not ONNX Runtime's traceback
        raise UserError(f"ONNX Runtime cannot load the exported {path.name}: {_first_line(e)}") from None


def _ort_pass(
    session: InferenceSession, batches: list[tuple[np.ndarray, dict[str, np.ndarray]]], num_rows: int, num_labels: int
) -> tuple[np.ndarray, float]:
    out = np.zeros((num_rows, num_labels), dtype=np.float32)
    seconds = 0.0
    for rows, feed in progress(batches, desc="ONNX Runtime", unit="batch", leave=False):  # the bar is not timed
        start = time.perf_counter()
        try:
            logits = session.run(["logits"], feed)[0]
        except Exception as e:  # noqa: BLE001 - one line, not ONNX Runtime's traceback
            raise UserError(
                f"ONNX Runtime cannot run the exported model on a batch of shape "
                f"{tuple(feed['input_ids'].shape)}: {_first_line(e)}"
            ) from None
        seconds += time.perf_counter() - start
        out[rows] = logits
    return out, seconds


class _Checked(NamedTuple):
    """One graph's pass over the check rows: its session, logits, forward seconds, largest |logit difference| from
    PyTorch and the first row beyond the tolerance (None when every logit is within it)."""

    session: InferenceSession
    logits: np.ndarray
    seconds: float
    max_diff: float
    bad_row: int | None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextlib.contextmanager
def _eager_attention(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """The model with Hugging Face's eager attention inside the block (the matmul-softmax-matmul pattern the
    transformer optimiser fuses; PyTorch's SDPA traces into a form it does not recognise), its own afterwards."""
    own = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(own)


def _export(model: PreTrainedModel, names: list[str], path: Path, pad_token_id: int, max_seq_len: int) -> None:
    """``torch.onnx.export`` (TorchScript exporter: no onnxscript needed, well under a second for a small model) of
    the model in eval mode, fp32, with eager attention, on an example batch of two rows, one padded (so no shortcut
    for unpadded batches is traced), with dynamic batch and sequence axes."""
    import onnx

    length = max(2, min(8, max_seq_len))
    ids = torch.full((2, length), min(5, model.config.vocab_size - 1), dtype=torch.long)
    mask = torch.ones_like(ids)
    ids[1, length // 2 :], mask[1, length // 2 :] = pad_token_id if pad_token_id is not None else 0, 0
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    wrapper = _LogitsOnly(model.float().eval(), names).eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad(), _eager_attention(model):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript); torch 2.4 has no ``dynamo`` argument
            legacy: dict[str, Any] = (
                {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            )
            torch.onnx.export(
                wrapper,
                tuple(example[n] for n in names),
                str(path),
                **legacy,
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(path))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a model the exporter cannot handle: one line
        raise UserError(
            f"torch.onnx.export cannot export this {model.config.model_type} model: {_first_line(e)}"
        ) from None
    finally:
        model.eval()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization advises pre-processing through the root logger on every call; the transformer
    optimiser logs its progress through its own loggers."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _optimize(src: Path, dst: Path, config: PretrainedConfig) -> dict[str, Any]:
    """ONNX Runtime's transformer optimiser on the plain graph ``src``: the fused graph is written to ``dst`` when
    attention is fused in every one of the model's ``num_hidden_layers`` encoder layers (the fusion that pays);
    returns the record: ``fused`` (whether ``dst`` was written), the optimiser's settings, the count of each fused
    operator it made and, when not fused, ``reason``."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(OPTIMIZER_MODEL_TYPE)
    options.use_raw_attention_mask(True)  # the 0/1 mask as given: right padding not assumed
    record: dict[str, Any] = {
        "fused": False,
        "model_type": OPTIMIZER_MODEL_TYPE,
        "opt_level": OPTIMIZER_OPT_LEVEL,
        "attention_mask": "raw",
        "fused_operators": {},
        "reason": None,
    }
    with _quiet_root_logger(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            optimized = optimize_model(
                str(src),
                model_type=OPTIMIZER_MODEL_TYPE,
                num_heads=config.num_attention_heads,
                hidden_size=config.hidden_size,
                optimization_options=options,
                opt_level=OPTIMIZER_OPT_LEVEL,
            )
        except Exception as e:  # noqa: BLE001 - the plain graph serves; say why
            record["reason"] = f"the optimiser failed ({_first_line(e)})"
            return record
        counts = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    record["fused_operators"] = counts
    layers = config.num_hidden_layers
    fused = sum(counts.get(op, 0) for op in ATTENTION_OPS)
    if fused != layers:
        record["reason"] = f"it fuses attention in {fused} of the {layers} layers of this {config.model_type} model"
        return record
    optimized.save_model_to_file(str(dst))
    record["fused"] = True
    return record


# how model.int8.onnx is quantised (export.json's int8_quantization): int8 weights with one scale per output
# channel (``per_channel``: a trained MiniLM student's int8 predictions agreed with fp32 on 98.4 % of 1,000 qp_pairs
# rows instead of 95.4 % with one scale per weight matrix, at the same speed: doc/deploy.md), activations
# quantised at run time (dynamic quantisation)
INT8_QUANTIZATION = {"method": "quantize_dynamic", "weight_type": "QInt8", "per_channel": True}


def _quantize(src: Path, dst: Path) -> None:
    """``quantize_dynamic`` of ``src`` (the fused graph where there is one: ONNX Runtime's advice for transformers,
    so that fused Attention becomes QAttention), as :data:`INT8_QUANTIZATION` says. The contrib ops' outputs have
    no types for ONNX's shape inference: float32 is the default tensor type."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=INT8_QUANTIZATION["per_channel"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _beyond_tolerance(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.abs(got - expected) > ATOL + RTOL * np.abs(expected)


def _metrics(task: Task, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in metrics(task, labels, task.predictions(logits)).items()}


def export_onnx(
    le: LoadedExperiment,
    step: int,
    label: str,
    out: Path,
    record: dict[str, Any],
    features: Features,
    quantize: str | None,
) -> dict[str, Any]:
    """Write the ONNX export of the loaded checkpoint (``le.model``) into ``out`` (atomically: a temporary folder
    renamed at the end) after checking it on ``features`` (the dev rows); returns the ``export.json`` record.
    Every input was checked by the caller; a failed check raises :class:`UserError` and leaves nothing."""
    import onnxruntime

    from .io_utils import atomic_save_with

    task, split = le.task, le.task.dev_split
    # LoadedExperiment types the tokenizer loosely (Any): it is the experiment's Hugging Face tokenizer
    model = le.model
    tokenizer = cast("PreTrainedTokenizerBase", le.tokenizer)
    names = input_names(model)
    threads = torch.get_num_threads()
    num_labels = model.config.num_labels
    assert num_labels is not None  # a classifier's config: export.py named its outputs (set_task_labels)
    labels = np.asarray(features.labels)
    n = len(features)
    torch_logits, torch_seconds = _pytorch_pass(le, features)
    batches = _batches(le, features, names)
    summary: dict[str, Any] = {}

    def check(path: Path) -> _Checked:
        """The graph at ``path`` against PyTorch's logits."""
        session = _session(path, threads)
        logits, seconds = _ort_pass(session, batches, n, num_labels)
        diff = np.abs(logits - torch_logits)
        bad = _beyond_tolerance(logits, torch_logits) | ~np.isfinite(logits)
        return _Checked(
            session,
            logits,
            seconds,
            float(diff.max()) if diff.size else 0.0,
            int(np.argwhere(bad)[0][0]) if bad.any() else None,
        )

    def save(tmp: Path) -> None:
        onnx_path, plain_path = tmp / ONNX_FILE, tmp / PLAIN_FILE
        _export(model, names, plain_path, tokenizer.pad_token_id, le.config["max_seq_len"])
        session, onnx_logits, onnx_seconds, plain_diff, row = check(plain_path)
        if row is not None:
            raise UserError(
                f"the ONNX model of model-{step}.pt differs from PyTorch beyond the tolerance {ATOL:g} + "
                f"{RTOL:g}*|logit| on the {n} {split} rows (max |logit difference| {plain_diff:.3g}, "
                f"first at row {row}); no export was written"
            )
        max_diff, optimizer = plain_diff, _optimize(plain_path, onnx_path, model.config)
        if optimizer["fused"]:
            fused = check(onnx_path)
            if fused.bad_row is None:
                session, onnx_logits, onnx_seconds, max_diff, _ = fused
            else:
                optimizer.update(
                    fused=False,
                    reason=f"its graph differs from PyTorch beyond the tolerance (max |logit "
                    f"difference| {fused.max_diff:.3g}, first at row {fused.bad_row})",
                )
                onnx_path.unlink()
        if not optimizer["fused"]:
            plain_path.rename(onnx_path)
        seconds = {"pytorch": [torch_seconds], "onnxruntime": [onnx_seconds]}
        int8_logits, int8_session = None, None
        if quantize == "int8":
            _quantize(onnx_path, tmp / INT8_FILE)
            int8_session = _session(tmp / INT8_FILE, threads)
            int8_logits, int8_seconds = _ort_pass(int8_session, batches, n, num_labels)
            seconds["onnxruntime_int8"] = [int8_seconds]
        if sum(s[0] for s in seconds.values()) < CHEAP_SECONDS:
            for _ in range(PASSES - 1):  # interleaved, so a busy moment of the machine hits every model alike
                seconds["pytorch"].append(_pytorch_pass(le, features)[1])
                seconds["onnxruntime"].append(_ort_pass(session, batches, n, num_labels)[1])
                if int8_session is not None:
                    seconds["onnxruntime_int8"].append(_ort_pass(int8_session, batches, n, num_labels)[1])
        rates = {k: round(n / max(statistics.median(v), 1e-9), 2) for k, v in seconds.items()}
        agreement = None
        if int8_logits is not None and not task.regression:
            agreement = float(np.mean(task.predictions(int8_logits) == task.predictions(onnx_logits)))
        summary.update(passes=len(seconds["pytorch"]))
        record.update(
            {
                "format": "onnx",
                "onnx": {
                    "file": ONNX_FILE,
                    "int8_file": INT8_FILE if int8_logits is not None else None,
                    "int8_quantization": dict(INT8_QUANTIZATION) if int8_logits is not None else None,
                    "opset": OPSET,
                    "split": split,
                    "rows": n,
                    "batch_size": BATCH_SIZE,
                    "tolerance": {"atol": ATOL, "rtol": RTOL},
                    "max_abs_diff": max_diff,
                    "metrics": {
                        "pytorch": _metrics(task, labels, torch_logits),
                        "onnx": _metrics(task, labels, onnx_logits),
                        "int8": None if int8_logits is None else _metrics(task, labels, int8_logits),
                    },
                    "int8_agreement": agreement,
                    "examples_per_s": {
                        "pytorch": rates["pytorch"],
                        "onnxruntime": rates["onnxruntime"],
                        "onnxruntime_int8": rates.get("onnxruntime_int8"),
                    },
                    "device": "cpu",
                    "threads": threads,
                    "onnxruntime_version": onnxruntime.__version__,
                    "torch_version": torch.__version__,
                    "optimizer": optimizer,
                    "plain_file": PLAIN_FILE if optimizer["fused"] else None,
                    "plain_max_abs_diff": plain_diff,
                },
            }
        )
        tokenizer.save_pretrained(tmp)
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(tmp)
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    atomic_save_with(out, save)
    _print_summary(le, label, out, record["onnx"], summary["passes"])
    return record


def _print_summary(le: LoadedExperiment, label: str, out: Path, o: dict[str, Any], passes: int) -> None:
    names = list(o["metrics"]["pytorch"])
    rows = [("pytorch", "pytorch"), ("onnxruntime", "onnx")]
    if o["int8_file"]:
        rows.append(("onnxruntime_int8", "int8"))
    print(
        f"ONNX export of {label} of {le.exp.name}: {o['split']} split, {o['rows']} rows, batches of "
        f"{o['batch_size']}, {o['threads']} thread(s), CPU, median of {passes} pass(es)"
    )
    print("\t".join(["runtime".ljust(17), *names, "examples/s"]))
    for rate_key, metric_key in rows:
        m = o["metrics"][metric_key]
        print("\t".join([rate_key.ljust(17), *(f"{m[k]:.6f}" for k in names), f"{o['examples_per_s'][rate_key]:.1f}"]))
    line = (
        f"max |ONNX - PyTorch| logit difference {o['max_abs_diff']:.3g} (tolerance {o['tolerance']['atol']:g} + "
        f"{o['tolerance']['rtol']:g}*|logit|)"
    )
    if o["int8_agreement"] is not None:
        line += f"; int8 predictions agree with fp32 on {100 * o['int8_agreement']:.2f} % of rows"
    print(line)
    print(_optimizer_line(o))
    files = ", ".join(f for f in (o["file"], o["int8_file"], o["plain_file"]) if f)
    print(f"exported {label} of {le.exp.name} to {out} ({files})")


def _optimizer_line(o: dict[str, Any]) -> str:
    """What ONNX Runtime's transformer optimiser made of the graph: the fused operators, or why model.onnx is the
    plain graph."""
    opt = o["optimizer"]
    if opt["fused"]:
        ops = ", ".join(f"{k} {v}" for k, v in opt["fused_operators"].items())
        return (
            f"{o['file']}: ONNX Runtime's transformer optimiser's graph ({ops}); the exporter's plain graph is "
            f"{o['plain_file']} (max |logit difference| {o['plain_max_abs_diff']:.3g})"
        )
    return (
        f"{o['file']}: the exporter's plain graph, not ONNX Runtime's transformer optimiser's: {opt['reason']} "
        f"(ONNX Runtime applies its own graph optimisations when it loads the file)"
    )
