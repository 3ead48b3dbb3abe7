"""Teacher fine-tuning (``run_fine_tune.py``): a pretrained encoder and a new head, cross-entropy on gold labels."""

from __future__ import annotations

from .. import config as cfg
from ..engine import distributed
from ..engine.seeding import seed_everything
from ..io_utils import sha256_file
from ..locking import releases_locks
from ..methods import get_method
from ..models.classifier import (build_pretrained_classifier, load_pretrained_config, load_tokenizer, save_model_dir,
                                weight_file_hashes)
from .start import prepare, start_experiment
from .training import run_training


@releases_locks
def run_fine_tune(flags) -> dict | None:
    p = prepare(flags)  # checks --num_class against the task
    e, ptrain_ver = flags.experiment, flags.pretrained.ptrain_ver
    task = p.task
    if flags.classifier.num_class is None:  # the task's label set, recorded in config.json
        flags = flags.replace(classifier={"num_class": task.num_class})
    data_file = task.path(p.data_root, e.dataset)
    examples = task.load(p.data_root, e.dataset, flags.paths.max_examples)
    pre_config = load_pretrained_config(ptrain_ver, e.model)
    cfg.check_max_seq_len(flags.batching.max_seq_len, pre_config.max_position_embeddings, f"--ptrain_ver {ptrain_ver!r}")
    tokenizer = load_tokenizer(ptrain_ver, "--ptrain_ver")
    cfg.check_room_for_text(flags.batching.max_seq_len, tokenizer)
    method = get_method("fine_tune").from_flags(flags)
    source_hash = sha256_file(data_file)
    inputs = {str(data_file): source_hash, **weight_file_hashes(ptrain_ver)}
    start = start_experiment(p, flags, flags.record(), inputs)
    if not start.run:
        return None
    seed_everything(flags.run.seed)
    model = build_pretrained_classifier(ptrain_ver, e.model, flags.classifier.num_class, flags.classifier.dropout)
    if distributed.is_main():
        save_model_dir(p.exp.model_dir, model.config, tokenizer)
    return run_training(p, flags, model, method, tokenizer, examples, resume_step=start.resume_step)
