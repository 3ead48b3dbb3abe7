#!/usr/bin/env python
"""Mutation check: does the test suite fail when a headline behaviour breaks?

Each mutation below is one small source change that breaks one behaviour the toolkit promises (a dropout site
of the own BERT forward, --compile, DDP loss weighting, an atomic write, resume, a layer mapping, a selection
rule, a parser's labels...). For each, the script copies the working tree (tracked and untracked, not ignored
files) into a temporary folder with ``../shared`` linked beside it, applies the change, runs the tests named for
it with ``pytest -x`` in file order (``-p no:randomly``: a mutation is caught by its bug, never by a test
order), and records:

- caught: the tests failed (exit status 1);
- MISSED: the tests passed with the bug in place;
- error: pytest could not run (collection error, timeout), or the mutation no longer applies because its source
  text is gone or is no longer unique (the code moved on: update the mutation).

Before the mutations it runs the union of their tests on the unchanged copy (``--no-baseline`` skips that): a
mutation counts as caught only against a passing baseline. Prints a markdown table; exit status 0 when every
mutation was caught.

    python scripts/mutation_check.py --jobs 2        # everything, two mutations at a time (see doc/testing.md)
    python scripts/mutation_check.py --list          # the mutations and their tests
    python scripts/mutation_check.py --only compile_ignored resume_rng_state

Keep it maintained: a new headline feature adds its mutation here, and a mutation that stops applying is fixed
in the same change that moved the code.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    behaviour: str  # what breaks, in a reader's words
    file: str
    old: str  # must occur exactly once in ``file``
    new: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repository


RESUME = "tests/test_resume.py::test_killed_and_resumed_is_bit_identical"
ATOMIC = "tests/test_atomic_writes.py::test_kill_mid_write_leaves_the_target_whole_and_the_rerun_completes"
PF_SITES = "tests/test_padding_free.py::test_every_dropout_site_runs_with_its_own_p_in_training"
DIST_FT = "tests/test_distributed.py::test_fine_tune_two_processes_match_one"
DIST_LAD = "tests/test_distributed.py::test_lad_two_processes_match_one"
GPU = "tests/test_gpu_paths.py"

EV = 'tests/test_eval_during_training.py'
MUTATIONS = [
    # ---- the GPU paths (issue 20), proven on a CPU: tests/test_gpu_paths.py ---------------------------------
    Mutation("placement_absolute_under_torchrun", "under torchrun --tdevice_id is an absolute index (every rank's "
             "teacher on one GPU)", "fine_tune/engine/device.py", "    index = local + device_id * per_node\n",
             "    index = device_id\n", (f"{GPU}::test_teacher_and_gate_devices_are_relative_to_each_rank_under_torchrun",)),
    Mutation("logged_parts_stay_on_their_device", "a logged part from the gates' device meets a resumed window on the "
             "student's", "fine_tune/engine/trainer.py",
             "                    else v.detach().to(self.device, non_blocking=nb)) for k, v in parts.items()}",
             "                    else v.detach()) for k, v in parts.items()}",
             (f"{GPU}::test_a_resumed_window_meets_parts_logged_on_another_device",)),
    Mutation("fp16_skip_not_joint", "an fp16 step whose gradients overflow is applied (schedules advance, weights "
             "move)", "fine_tune/engine/trainer.py", "            skipped = not bool(finite)\n",
             "            skipped = False\n", (f"{GPU}::test_a_skipped_fp16_step_moves_no_optimiser_and_no_schedule",)),
    Mutation("fp16_nan_loss_tolerated", "a NaN loss is tolerated under fp16 loss scaling", "fine_tune/engine/trainer.py",
             "        if not bad:\n            return\n",
             "        if not bad or self.precision.use_scaler:\n            return\n",
             (f"{GPU}::test_a_nan_loss_stops_an_fp16_run_at_once",)),
    Mutation("fp16_scale_collapse_unreported", "a collapsing fp16 loss scale is never reported",
             "fine_tune/engine/trainer.py", "        if scale < self.MIN_LOSS_SCALE:\n", "        if False:\n",
             (f"{GPU}::test_a_collapsing_loss_scale_stops_the_run_and_says_so",)),
    Mutation("host_layout_ignored", "the padding-free forward rebuilds its packing from the mask (host-device syncs)",
             "fine_tune/models/padding_free.py", "        if layout is not None:\n", "        if False:\n",
             (f"{GPU}::test_a_training_step_makes_no_host_device_sync",)),
    Mutation("compile_planned_buckets", "a compiled run plans its attention buckets (ints TorchDynamo guards on)",
             "fine_tune/models/padding_free.py", 'overhead=float("inf") if self.compile else None',
             "overhead=None", (f"{GPU}::test_the_compiled_forward_compiles_a_bounded_number_of_graphs",)),
    Mutation("alp_under_autocast", "ALP-KD's einsums run in the autocast dtype", "fine_tune/methods/alp.py",
             "    return torch.autocast(device_type=x.device.type, enabled=False)",
             "    return torch.autocast(device_type=x.device.type, enabled=torch.is_autocast_enabled(x.device.type))",
             (f"{GPU}::test_alp_scores_and_targets_stay_fp32_under_autocast",)),
    Mutation("engine_moves_every_teacher_layer", "every teacher layer crosses to the student's device",
             "fine_tune/engine/trainer.py",
             "teacher_out = ModelOutputs(teacher_out.logits.to(self.device), teacher_out.hidden_states,",
             "teacher_out = ModelOutputs(teacher_out.logits.to(self.device), None if teacher_out.hidden_states is None "
             "else tuple(h.to(self.device) for h in teacher_out.hidden_states),",
             (f"{GPU}::test_only_what_a_method_reads_crosses_from_the_teacher_device",)),
    Mutation("cuda_rng_by_index", "the student's CUDA random stream is restored to the saved device index",
             "fine_tune/engine/checkpoint.py", "                torch.cuda.set_rng_state(by_role[role], d)\n",
             "                torch.cuda.set_rng_state(by_role[role], torch.device('cuda:1'))\n",
             (f"{GPU}::test_cuda_random_streams_are_restored_by_role_not_by_index",)),
    Mutation("ddp_waits_for_unused_parameters", "a hidden-loss-only run is wrapped in DDP (which waits for the "
             "classifier's gradients)", "fine_tune/engine/trainer.py",
             "        self.ddp = self.world.enabled and method.every_parameter_learns\n",
             "        self.ddp = self.world.enabled\n",
             ("tests/test_distributed.py::test_hidden_losses_only_under_torchrun",)),
    # ---- the own BERT forward (models/padding_free.py, models/dropout.py) -------------------------------------
    Mutation("pf_attention_probs_dropout", "own forward skips attention-probability dropout",
             "fine_tune/models/padding_free.py", "sa.dropout.p if sa.training else 0.0,\n", "0.0,\n", (PF_SITES,)),
    Mutation("pf_attention_output_dropout", "own forward skips the attention output's dropout",
             "fine_tune/models/padding_free.py", "so.LayerNorm(dropout(so.dense(attn), so.dropout.p, so.training) + x)",
             "so.LayerNorm(so.dense(attn) + x)", (PF_SITES,)),
    Mutation("pf_feed_forward_dropout", "own forward skips the feed-forward output's dropout",
             "fine_tune/models/padding_free.py", "out.LayerNorm(dropout(out.dense(inter), out.dropout.p, out.training) + x)",
             "out.LayerNorm(out.dense(inter) + x)", (PF_SITES,)),
    Mutation("pf_embedding_dropout", "own forward skips the embeddings' dropout", "fine_tune/models/padding_free.py",
             "return dropout(emb.LayerNorm(x), emb.dropout.p, emb.training)", "return emb.LayerNorm(x)", (PF_SITES,)),
    Mutation("pf_classifier_dropout", "own forward uses the hidden dropout p for the classifier",
             "fine_tune/models/padding_free.py", "dropout(pooled, self.model.dropout.p, self.model.training)",
             "dropout(pooled, self.model.config.hidden_dropout_prob, self.model.training)", (PF_SITES,)),
    Mutation("cheap_dropout_scale", "cheaper CPU dropout forgets to rescale kept elements",
             "fine_tune/models/dropout.py", "return u >= cut - (1 << 15), _LEVELS / (_LEVELS - cut)",
             "return u >= cut - (1 << 15), 1.0", ("tests/test_dropout.py",)),
    # ---- engine ------------------------------------------------------------------------------------------------
    Mutation("compile_ignored", "--compile is ignored by the trainer", "fine_tune/engine/trainer.py",
             "        if settings.compile:\n", "        if False:\n", ("tests/test_compile_option.py",)),
    Mutation("logged_loss_summed", "the logged loss is the sum over micro-batches, not the mean",
             "fine_tune/engine/trainer.py",
             "self.sums[k] = self.sums[k] + v / s.accum_step if k in self.sums else v / s.accum_step",
             "self.sums[k] = self.sums[k] + v if k in self.sums else v",
             ("tests/test_engine.py::test_gradient_accumulation_matches_full_batch",)),
    Mutation("ddp_shard_loss_weight", "DDP drops the per-shard loss weight", "fine_tune/engine/trainer.py",
             "self.scaler.scale(loss * weight if weight != 1.0 else loss).backward()",
             "self.scaler.scale(loss).backward()", (DIST_FT,)),
    Mutation("ddp_logged_weight", "DDP logs the unweighted per-shard losses", "fine_tune/engine/trainer.py",
             "(v.detach().to(self.device, non_blocking=nb) * weight if weight != 1.0\n"
             "                    else v.detach().to(self.device, non_blocking=nb))",
             "v.detach().to(self.device, non_blocking=nb)", (DIST_FT,)),
    Mutation("ddp_logged_rank_mean", "DDP logs rank 0's losses instead of the mean over ranks",
             "fine_tune/engine/trainer.py", "            distributed.all_reduce_mean_([stacked])\n", "            pass\n",
             (DIST_FT,)),
    Mutation("ddp_gate_gradient_average", "DDP does not average the LAD gates' gradients across ranks",
             "fine_tune/engine/trainer.py",
             "distributed.all_reduce_mean_([p.grad for part in averaged for p in part.params if p.grad is not None])",
             "pass", (DIST_LAD,)),
    Mutation("torchrun_exit_through_finalisation", "a torchrun worker exits through the interpreter's finalisation "
             "(where DDP's leaked Gloo threads can abort it)", "fine_tune/cli.py",
             "        distributed.exit_process(code)\n", "        pass\n",
             ("tests/test_distributed.py::test_torchrun_worker_closes_then_exits_with_its_status",)),
    Mutation("gate_no_decay_group", "LayerNorm weights and biases get weight decay", "fine_tune/engine/optim.py",
             'NO_DECAY = ("bias", "LayerNorm.weight")', 'NO_DECAY = ("bias",)',
             ("tests/test_engine.py::test_no_decay_groups_by_name",)),
    Mutation("gate_layernorm_decayed", "the LAD gates' layernorm.weight gets weight decay (the fidelity fix undone)",
             "fine_tune/engine/optim.py", 'GATE_NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight")',
             'GATE_NO_DECAY = ("bias", "LayerNorm.weight")',
             ("tests/test_optimiser.py::test_gate_optimiser_groups_lr_and_schedule",)),
    Mutation("default_lr_not_original", "run_fine_tune.py's --lr default is not the original script's 3e-5",
             "fine_tune/settings.py", 'lr: float = flag(3e-5, "peak learning rate")', 'lr: float = flag(2e-5, "peak learning rate")',
             ("tests/test_flags.py",)),
    Mutation("no_writer_lock", "a second run writes an experiment a live run is writing",
             "fine_tune/run/start.py", '    lock_folder(exp.path, "experiment")\n', "",
             ("tests/test_never_lose_a_run.py::test_one_writer_per_experiment",)),
    Mutation("resume_trusts_inputs", "a resume trains on a changed training file",
             "fine_tune/run/start.py", "        if changed and not overwrite:\n", "        if False:\n",
             ("tests/test_never_lose_a_run.py::test_resume_refuses_a_changed_training_file",)),
    Mutation("name_not_checked", "an experiment name climbs out of the experiment root",
             "fine_tune/experiment.py", '    return f"{check_name(experiment, flag)}_', '    return f"{experiment}_',
             ("tests/test_never_lose_a_run.py::test_a_name_with_dotdot_and_overwrite_deletes_nothing",)),
    Mutation("damaged_final_counts_as_finished", "a truncated final checkpoint counts as finished",
             "fine_tune/run/start.py", "    if not path.is_file():\n        return False\n    try:\n        read_checkpoint(path, mmap=True)",
             "    if not path.is_file():\n        return False\n    try:\n        pass",
             ("tests/test_never_lose_a_run.py::test_a_damaged_final_checkpoint_is_not_finished",)),
    Mutation("logits_teacher_unchecked", "distillation trains on logits of a teacher since re-trained",
             "fine_tune/plan/training.py", "    check_teacher_unchanged(meta, exp.root, e.dataset)\n", "",
             ("tests/test_never_lose_a_run.py::test_distillation_refuses_logits_of_a_retrained_teacher",)),
    Mutation("legacy_rule_dropped", "a run started before a fidelity fix resumes under the new rule",
             "fine_tune/plan/training.py", "    legacy = _legacy(exp, record)\n", "    legacy = {}\n",
             ("tests/test_legacy_resume.py",)),
    Mutation("pkd_cls_summed", "PKD normalized_cls summed over layers and dimensions again",
             "fine_tune/methods/pkd.py", 'cls_reduction: str = "mean", **common):', 'cls_reduction: str = "sum", **common):',
             ("tests/test_layerwise_methods.py::test_pkd_mappings_and_losses",)),
    Mutation("gate_default_init", "the gates keep PyTorch's default initialisation instead of Xavier-uniform",
             "fine_tune/models/gates.py", "        nn.init.xavier_uniform_(self.linear.weight)\n", "",
             ("tests/test_layerwise_methods.py::test_gate_forward_and_all_zeros_first_step",)),
    # ---- atomic writes -------------------------------------------------------------------------------------------
    Mutation("atomic_checkpoint", "model-N.pt written in place", "fine_tune/engine/checkpoint.py",
             "    atomic_torch_save(cpu_state_dict(module), path)", "    torch.save(cpu_state_dict(module), path)",
             (f"{RESUME}[fine_tune_group_by_length]",)),
    Mutation("atomic_resume_state", "resume-N.pt written in place", "fine_tune/engine/checkpoint.py",
             "atomic_torch_save(state, resume_path(folder, step))", "torch.save(state, resume_path(folder, step))",
             (f"{RESUME}[offline_distill]",)),
    Mutation("atomic_method_files", "LAD gate files written in place", "fine_tune/engine/trainer.py",
             'atomic_torch_save(state, self.exp.path / f"{stem}-{step}.pt")',
             'torch.save(state, self.exp.path / f"{stem}-{step}.pt")', (f"{RESUME}[lad_no]",)),
    Mutation("atomic_heat_map", "layer-map-N.png written in place", "fine_tune/plots.py",
             "    with atomic_write(path) as f:", "    with open(path, 'wb') as f:",
             (f"{RESUME}[lad_dynamic_padding_with_maps]",)),
    Mutation("atomic_config", "config.json written in place", "fine_tune/config.py",
             "    atomic_write_json(path, record)", "    Path(path).write_text(json.dumps(record, default=str))",
             (f"{ATOMIC}[config]",)),
    Mutation("atomic_tokenisation_cache", "the tokenisation cache written in place", "fine_tune/batching.py",
             "atomic_torch_save(features.to_state(), path)", "torch.save(features.to_state(), path)",
             (f"{ATOMIC}[tokenisation_cache]",)),
    Mutation("atomic_logits", "a logits data set's rows written in place", "fine_tune/tasks/logits.py",
             'with atomic_write(out_dir / "logits.jsonl", "w") as f:',
             'with open(out_dir / "logits.jsonl", "w", encoding="utf-8") as f:', (f"{ATOMIC}[logits]",)),
    Mutation("atomic_eval_table", "eval-{split}.json written in place", "fine_tune/evaluate.py",
             'atomic_write_json(exp.path / f"eval-{split}.json", table)',
             '(exp.path / f"eval-{split}.json").write_text(__import__("json").dumps(table))', (f"{ATOMIC}[eval_table]",)),
    Mutation("atomic_submission", "the submission file written in place", "fine_tune/tasks/task.py",
             'atomic_write_text(path, "\\n".join(lines) + "\\n")', 'Path(path).write_text("\\n".join(lines) + "\\n")',
             (f"{ATOMIC}[submission]",)),
    # ---- resume --------------------------------------------------------------------------------------------------
    Mutation("resume_data_position", "resume restarts the data order from the beginning", "fine_tune/engine/trainer.py",
             '        self.stream.position = state["stream_position"]\n', "        pass\n", (f"{RESUME}[fine_tune]",)),
    Mutation("resume_rng_state", "resume does not restore the RNG states (dropout masks)",
             "fine_tune/engine/trainer.py", '        for note in set_rng_state(state["rng"], self.rng_devices):\n',
             "        for note in []:\n",
             (f"{RESUME}[fine_tune]",)),
    Mutation("resume_optimizer_state", "resume starts the optimisers afresh", "fine_tune/engine/trainer.py",
             '            part.optimizer.load_state_dict(state["optimizers"][part.name])\n', "            pass\n",
             (f"{RESUME}[fine_tune]",)),
    Mutation("resume_gate_state", "resume re-initialises the LAD gates", "fine_tune/engine/trainer.py",
             '        if state["method"]:\n            self.method.load_checkpoint_state(state["method"])\n', "",
             (f"{RESUME}[partial_lad]",)),
    Mutation("restart_keeps_old_events", "a run killed before its first complete checkpoint starts over with the "
             "killed run's TensorBoard events left in (steps logged twice)", "fine_tune/engine/trainer.py",
             "purge_step=self.step + 1)", "purge_step=self.step + 1 if self.step else None)",
             (f"{RESUME}[alp_kd_hidden]",)),
    Mutation("finished_without_gates", "a run killed between model-N.pt and its gate files counts as finished",
             "fine_tune/run/start.py",
             "    if final_whole and (not ready or ready[-1] == total_step):",
             "    if final_whole:", (f"{RESUME}[lad_last_step]",)),
    Mutation("overwrite_leaves_predictions", "--overwrite leaves the old run's eval predictions behind",
             "fine_tune/run/start.py", '        if entry.name not in ("config.json", HOLDER_FILE):',
             '        if entry.name not in ("config.json", HOLDER_FILE) and entry.suffix != ".npz":',
             ("tests/test_run_safety.py::test_overwrite_leaves_nothing_of_the_old_run",)),
    # ---- layer mappings ------------------------------------------------------------------------------------------
    Mutation("lad_targets", "LAD student layer j learns A_{j*skip - 1}", "fine_tune/methods/lad.py",
             "    return uniform_layers(num_student_layers, num_teacher_layers)\n\n\ndef chain_contributions",
             "    return [t - 1 for t in uniform_layers(num_student_layers, num_teacher_layers)]\n\n\ndef chain_contributions",
             ("tests/test_layerwise_methods.py",)),
    Mutation("lad_no_pairs", "LAD-NO gates pair teacher layers (j*skip - 2, j*skip)", "fine_tune/methods/lad.py",
             "self.pairs = [(j * self.skip - 1, j * self.skip)", "self.pairs = [(max(1, j * self.skip - 2), j * self.skip)",
             ("tests/test_layerwise_methods.py",)),
    Mutation("partial_lad_raw_layers", "partial LAD's remaining layers learn the wrong raw teacher layers",
             "fine_tune/methods/lad.py", "raw = [max(gate_indices) + skip * r for r",
             "raw = [max(gate_indices) + skip * (r - 1) + 1 for r", ("tests/test_layerwise_methods.py",)),
    Mutation("pkd_skip_layers", "PKD-skip matches teacher layers j*skip - 1", "fine_tune/methods/pkd.py",
             "        return uniform_layers(num_student_layers, num_teacher_layers, count)",
             "        return [t - 1 for t in uniform_layers(num_student_layers, num_teacher_layers, count)]",
             ("tests/test_layerwise_methods.py",)),
    Mutation("alp_v2_visible_layers", "ALP-KD-hidden-v2 attends over every teacher layer", "fine_tune/methods/alp.py",
             'return uniform_layers(self.ls, self.lt)[j - 1] if self.mode == "alp-kd-hidden-v2" and j < self.ls else None',
             "return None",
             ("tests/test_layerwise_methods.py",)),
    Mutation("student_init_layers", "student layer j is initialised from teacher layer t + 1",
             "fine_tune/models/init.py", "src, dst = t_layers[t - 1], s_layers[j - 1]",
             "src, dst = t_layers[min(t, len(t_layers) - 1)], s_layers[j - 1]",
             ("tests/test_layerwise_scripts.py::test_student_layers_come_from_the_pretrained_teacher",)),
    # ---- results and selection -----------------------------------------------------------------------------------
    Mutation("best_checkpoint_ties", "ties between checkpoints go to the earlier one", "fine_tune/selection.py",
             "        if row[metric] >= best[metric]:", "        if row[metric] > best[metric]:",
             ("tests/test_results.py",)),
    Mutation("select_on_ignored", "--select_on is ignored: the checkpoint is chosen on the reported split",
             "fine_tune/selection.py", "    chooser = rule.chooser(reported)\n", "    chooser = reported\n",
             ("tests/test_results.py",)),
    Mutation("last_rule_first", "the 'last' rule reports the first evaluated checkpoint", "fine_tune/selection.py",
             'step = rows[-1]["ckpt"] if rule.kind == "last"', 'step = rows[0]["ckpt"] if rule.kind == "last"',
             ("tests/test_results.py",)),
    Mutation("bootstrap_unpaired", "the bootstrap resamples the two systems independently (unpaired)",
             "fine_tune/results.py", "        stats[start:stop] = counts @ d / n",
             "        stats[start:stop] = (counts @ a - rng.multinomial(n, np.full(n, 1.0 / n), size=stop - start) @ b) / n",
             ("tests/test_results.py",)),
    # ---- teachers and students from elsewhere, TinyBERT, MiniLM (issue 16) ----------------------------------------
    Mutation("teacher_labels_not_reordered", "a Hugging Face teacher's outputs stay in its own label order",
             "fine_tune/teacher.py", "            if self.label_order is not None:\n                reorder_outputs(model, self.label_order)\n",
             "", ("tests/test_model_families.py::test_a_hugging_face_teacher_drives_gen_logits_and_lad",)),
    Mutation("token_types_to_every_model", "token type ids are given to models without a token type table",
             "fine_tune/models/forward.py", "    return config is None or (getattr(config, \"type_vocab_size\", 0) or 0) > 1",
             "    return True", ("tests/test_model_families.py::test_token_types_go_only_to_models_that_read_them",)),
    Mutation("projection_not_saved", "the width projection is not saved with the checkpoints and the resume state",
             "fine_tune/methods/layerwise.py",
             '        return {} if self.projection is None else {"projection": self.projection.state_dict()}',
             "        return {}", (f"{RESUME}[lad_other_width]",
                                   "tests/test_model_families.py::test_a_pretrained_student_of_another_width_learns_through_a_projection")),
    Mutation("projection_not_applied", "student hidden states reach the losses unprojected (the projection learns nothing)",
             "fine_tune/methods/layerwise.py", "            student = self.in_teacher_space(student)\n", "",
             ("tests/test_model_families.py::test_the_projection_gets_gradient_from_every_layerwise_loss",)),
    Mutation("tinybert_padding_keys_kept", "TinyBERT's attention scores keep the padding keys",
             "fine_tune/methods/tinybert.py", "            sk, tk = sk * _token_mask(mask, sk), tk * _token_mask(mask, tk)\n", "",
             ("tests/test_attention_losses.py",
              "tests/test_model_families.py::test_tinybert_loss_matches_an_independent_computation_on_real_models")),
    Mutation("tinybert_embeddings_unprojected", "TinyBERT's embedding loss skips the shared W_h",
             "fine_tune/methods/layerwise.py", "embeddings=p(0, emb) if emb is not None and p.shared else emb)",
             "embeddings=emb)",
             ("tests/test_model_families.py::test_tinybert_loss_matches_an_independent_computation_on_real_models",)),
    Mutation("minilm_teacher_layer_off_by_one", "MiniLM's student learns the teacher's second-to-last layer",
             "fine_tune/methods/minilm.py", "teacher.attention_inputs[self.teacher_layer - 1]",
             "teacher.attention_inputs[self.teacher_layer - 2]",
             ("tests/test_model_families.py::test_minilm_attention_kl_matches_hugging_faces_own_attention",)),
    Mutation("padding_free_qkv_misordered", "the padding-free forward records Q, K, V in the wrong order",
             "fine_tune/models/padding_free.py", "else tuple(pk.pad(t).chunk(3, dim=-1))",
             "else tuple(pk.pad(t).chunk(3, dim=-1))[::-1]",
             ("tests/test_model_families.py::test_the_padding_free_forward_records_the_same_attention_inputs",)),
    Mutation("padding_free_grid_qkv_misordered", "over the padded grid the own forward records its keys as queries",
             "fine_tune/models/padding_free.py", "record.append((q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))",
             "record.append((k.transpose(1, 2), q.transpose(1, 2), v.transpose(1, 2)))",
             ("tests/test_model_families.py::test_the_padding_free_forward_records_the_same_attention_inputs",)),
    Mutation("uneven_layers_floor", "a student whose layers do not divide the teacher's maps to floor(j L_t / L_s)",
             "fine_tune/methods/layerwise.py", "    return [-(-j * lt // ls) for j in range(1, (ls if count is None else count) + 1)]",
             "    return [j * lt // ls for j in range(1, (ls if count is None else count) + 1)]",
             ("tests/test_model_families.py::test_layer_maps_of_a_student_whose_layers_do_not_divide_the_teachers",)),
    # ---- parsers ---------------------------------------------------------------------------------------------------
    Mutation("boolq_string_labels", "BoolQ's string labels are mapped the wrong way round", "fine_tune/tasks/boolq.py",
             '_LABELS = {True: 1, False: 0, "true": 1, "false": 0,', '_LABELS = {True: 1, False: 0, "true": 0, "false": 1,',
             ("tests/test_tasks.py",)),
    Mutation("boolq_json_labels", "BoolQ's JSON boolean labels are mapped the wrong way round",
             "fine_tune/tasks/boolq.py", '_LABELS = {True: 1, False: 0,', '_LABELS = {True: 0, False: 1,',
             ("tests/test_tasks.py",)),
    Mutation("boolq_pair_order", "BoolQ's pair is (question, passage) instead of the original's (passage, question)",
             "fine_tune/tasks/boolq.py", 'text=row["passage"], text_pair=row["question"]',
             'text=row["question"], text_pair=row["passage"]', ("tests/test_tasks.py",)),
    Mutation("qqp_labels", "QQP's is_duplicate is inverted", "fine_tune/tasks/qqp.py", "label=int(cols[5])",
             "label=1 - int(cols[5])", ("tests/test_tasks.py",)),
    Mutation("allocator_untuned", "the allocator tuning reports success without tuning", "fine_tune/engine/allocator.py",
             "    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int\n",
             "    return True\n", ("tests/test_allocator.py",)),
    # issue 17: evaluation during training
    Mutation("prune_deletes_the_best", "--save_total_limit deletes the best checkpoint of the evaluation during training",
             "fine_tune/engine/checkpoint.py", "    for step in (s for s in old if s != keep):",
             "    for step in old:", (f"{EV}::test_save_total_limit_keeps_the_best_checkpoint_and_the_newest",)),
    Mutation("eval_history_lost_on_resume", "a resumed run forgets the evaluations before its checkpoint",
             "fine_tune/engine/evaluation.py", '        self.rows = [dict(r) for r in state["rows"]]',
             "        self.rows = []", (f"{EV}::test_a_killed_run_neither_repeats_nor_loses_an_evaluation",)),
    Mutation("eval_history_kept_past_the_resume", "a resumed run keeps what the killed run evaluated after its checkpoint",
             "fine_tune/engine/trainer.py", "                self.evaluator.write_table(self.history.rows)\n"
             "            self.history.write(self.exp.path)\n", "                self.evaluator.write_table(self.history.rows)\n",
             (f"{EV}::test_a_killed_run_neither_repeats_nor_loses_an_evaluation",)),
    Mutation("patience_off_by_one", "early stopping waits one evaluation more than --early_stop_patience",
             "fine_tune/engine/evaluation.py", "self.without_improvement >= self.s.patience",
             "self.without_improvement > self.s.patience",
             (f"{EV}::test_early_stopping_stops_after_p_evaluations_and_the_run_is_finished",)),
    # ---- task parsers, metrics, submission files (fixtures where the wrong answer differs; issue 27) ----------
    Mutation("mnli_annotator_label", "MNLI's labels read from the first annotator's column (label1) instead of "
             "gold_label", "fine_tune/tasks/registry.py",
             'parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="gold_label", idx="index"),',
             'parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="label1", idx="index"),',
             ("tests/test_glue_tasks.py::test_mnli_splits_columns_and_two_submission_files",)),
    Mutation("mnli_annotator_label5", "MNLI dev's labels read from the last annotator's column (label5) instead of "
             "gold_label", "fine_tune/tasks/registry.py",
             'parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="gold_label", idx="index"),',
             'parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="label5", idx="index"),',
             ("tests/test_glue_tasks.py::test_mnli_splits_columns_and_two_submission_files",)),
    Mutation("stsb_score_truncated", "STS-B's gold scores truncated to whole numbers", "fine_tune/tasks/columns.py",
             "        value = float(raw)\n", "        value = float(int(float(raw)))\n",
             ("tests/test_glue_tasks.py::test_stsb_scores_metrics_and_file",)),
    Mutation("stsb_score_rounded", "STS-B's gold scores rounded to whole numbers", "fine_tune/tasks/columns.py",
             "        value = float(raw)\n", "        value = float(round(float(raw)))\n",
             ("tests/test_glue_tasks.py::test_stsb_scores_metrics_and_file",)),
    Mutation("cb_weighted_f1", "CB's macro F1 computed as the support-weighted F1", "fine_tune/tasks/metrics.py",
             'average="macro"', 'average="weighted"',
             ("tests/test_glue_tasks.py::test_metrics_against_hand_computed_values",
              "tests/test_glue_tasks.py::test_each_task_reports_its_metrics_computed_independently[cb]")),
    Mutation("cb_micro_f1", "CB's macro F1 computed as micro F1 (= accuracy)", "fine_tune/tasks/metrics.py",
             'average="macro"', 'average="micro"',
             ("tests/test_glue_tasks.py::test_metrics_against_hand_computed_values",
              "tests/test_glue_tasks.py::test_each_task_reports_its_metrics_computed_independently[cb]")),
    Mutation("user_labels_sorted", "a task of your own maps its labels to class ids in sorted order, not task.json's",
             "fine_tune/tasks/user.py", 'labels = [str(x) for x in spec.get("labels") or []]',
             'labels = sorted(str(x) for x in spec.get("labels") or [])',
             ("tests/test_user_tasks.py::test_labels_follow_the_declared_order_through_parse_and_the_prediction_file",
              "tests/test_user_tasks.py::test_a_task_of_your_own_through_fine_tune_eval_and_predictions[jsonl]")),
    Mutation("user_label_names_sorted", "a task of your own names its classes in sorted order in the prediction file",
             "fine_tune/tasks/registry.py", 'labels = tuple(str(x) for x in spec.get("labels") or ["score"])',
             'labels = tuple(sorted(str(x) for x in spec.get("labels") or ["score"]))',
             ("tests/test_user_tasks.py::test_labels_follow_the_declared_order_through_parse_and_the_prediction_file",)),
    Mutation("qqp_test_ids_row_numbers", "QQP's test ids replaced by row numbers", "fine_tune/tasks/qqp.py",
             "examples.append(Example(idx=idx, text=cols[1], text_pair=cols[2], label=None))",
             "examples.append(Example(idx=len(examples), text=cols[1], text_pair=cols[2], label=None))",
             ("tests/test_tasks.py::test_qqp_test_split",
              "tests/test_tasks.py::test_synthetic_test_ids_reach_the_submission_file[qqp]")),
    Mutation("submission_numbers_rows", "the GLUE submission file numbers its rows instead of writing the file's ids",
             "fine_tune/tasks/task.py",
             'lines = ["index\\tprediction"] + [f"{ex.idx}\\t{shown(p)}" for ex, p in zip(examples, predictions)]',
             'lines = ["index\\tprediction"] + [f"{i}\\t{shown(p)}" for i, (ex, p) in enumerate(zip(examples, predictions))]',
             ("tests/test_tasks.py::test_submission_writers",)),
    Mutation("superglue_submission_numbers_rows", "the SuperGLUE submission file numbers its rows instead of writing "
             "the file's idx", "fine_tune/tasks/task.py",
             'lines = [json.dumps({"idx": ex.idx, "label": names[int(p)]}) for ex, p in zip(examples, predictions)]',
             'lines = [json.dumps({"idx": i, "label": names[int(p)]}) for i, (ex, p) in enumerate(zip(examples, predictions))]',
             ("tests/test_tasks.py::test_submission_writers",
              "tests/test_glue_tasks.py::test_cb_jsonl_and_its_superglue_file")),
    Mutation("boolq_idx_row_numbers", "BoolQ's idx replaced by the row number", "fine_tune/tasks/boolq.py",
             'idx = row.get("idx", len(examples))', "idx = len(examples)",
             ("tests/test_tasks.py::test_synthetic_test_ids_reach_the_submission_file[boolq]",)),
    Mutation("boolq_capitalised_labels", 'BoolQ\'s "True"/"False" string labels refused', "fine_tune/tasks/boolq.py",
             ', "True": 1, "False": 0}', "}",
             ("tests/test_tasks.py::test_boolq_boolean_and_string_labels_give_the_same_examples",)),
    Mutation("f1_negative_class", "F1 (MRPC, QQP) scores class 0 as the positive class", "fine_tune/tasks/metrics.py",
             "f1_score(labels, preds, zero_division=0)", "f1_score(labels, preds, pos_label=0, zero_division=0)",
             ("tests/test_glue_tasks.py::test_metrics_against_hand_computed_values",)),
    Mutation("f1_macro_for_binary", "F1 (MRPC, QQP) is the macro average of both classes, not class 1's",
             "fine_tune/tasks/metrics.py", "f1_score(labels, preds, zero_division=0)",
             'f1_score(labels, preds, average="macro", zero_division=0)',
             ("tests/test_glue_tasks.py::test_metrics_against_hand_computed_values",)),
    Mutation("f1_zero_division_warns", "F1 warns (UndefinedMetricWarning) when a split has no positive row and none "
             "is predicted", "fine_tune/tasks/metrics.py", "f1_score(labels, preds, zero_division=0)",
             "f1_score(labels, preds)", ("tests/test_glue_tasks.py::test_metrics_against_hand_computed_values",)),
    Mutation("correlation_constant_nan", "Pearson/Spearman of a constant column are NaN instead of 0",
             "fine_tune/tasks/metrics.py", "if len(labels) < 2 or labels.std() == 0 or preds.std() == 0:",
             "if len(labels) < 2:", ("tests/test_glue_tasks.py::test_metrics_against_hand_computed_values",)),
    Mutation("pearson_spearman_swapped", "the Pearson and Spearman metrics swapped", "fine_tune/tasks/metrics.py",
             '"pearson": pearson, "spearman": spearman}', '"pearson": spearman, "spearman": pearson}',
             ("tests/test_glue_tasks.py::test_each_task_reports_its_metrics_computed_independently[stsb]",)),
    Mutation("cb_file_label_order", "CB's file labels mapped in another order (contradiction <-> neutral)",
             "fine_tune/tasks/registry.py",
             'parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), ("entailment", "contradiction", "neutral")),',
             'parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), ("entailment", "neutral", "contradiction")),',
             ("tests/test_glue_tasks.py::test_cb_jsonl_and_its_superglue_file",)),
    Mutation("cb_label_names_order", "CB's submission writes contradiction for neutral and back",
             "fine_tune/tasks/registry.py",
             'label_names=("entailment", "contradiction", "neutral"), submission_format="superglue"',
             'label_names=("entailment", "neutral", "contradiction"), submission_format="superglue"',
             ("tests/test_glue_tasks.py::test_cb_jsonl_and_its_superglue_file",)),
    Mutation("mnli_file_label_order", "MNLI's file labels mapped in another order (neutral <-> contradiction)",
             "fine_tune/tasks/registry.py", 'SENTENCE_PAIR_TEST, ("entailment", "neutral", "contradiction")),',
             'SENTENCE_PAIR_TEST, ("entailment", "contradiction", "neutral")),',
             ("tests/test_glue_tasks.py::test_mnli_splits_columns_and_two_submission_files",)),
    Mutation("mnli_pair_swapped", "MNLI's pair read as (hypothesis, premise)", "fine_tune/tasks/registry.py",
             'parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="gold_label", idx="index"),',
             'parse=_tsv(TsvLayout(text="sentence2", pair="sentence1", label="gold_label", idx="index"),',
             ("tests/test_glue_tasks.py::test_mnli_splits_columns_and_two_submission_files",)),
    Mutation("rte_sg_label_order", "SuperGLUE RTE's entailment/not_entailment mapped the wrong way round",
             "fine_tune/tasks/registry.py", 'parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), NLI2,',
             'parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), NLI2[::-1],',
             ("tests/test_glue_tasks.py::test_rte_superglue_jsonl_labels_and_ids",)),
    Mutation("cola_test_ids_ignored", "CoLA's test ids replaced by row numbers (the index column ignored)",
             "fine_tune/tasks/registry.py",
             'TsvLayout(text="sentence", idx="index"), BINARY),\n        metrics=("mcc", "accuracy")',
             'TsvLayout(text="sentence"), BINARY),\n        metrics=("mcc", "accuracy")',
             ("tests/test_glue_tasks.py::test_cola_header_less_train_and_indexed_test",)),
    Mutation("pair_test_ids_ignored", "the index column of the sentence-pair test files (MNLI, STS-B, RTE, WNLI) "
             "ignored", "fine_tune/tasks/registry.py",
             'SENTENCE_PAIR_TEST = TsvLayout(text="sentence1", pair="sentence2", idx="index")',
             'SENTENCE_PAIR_TEST = TsvLayout(text="sentence1", pair="sentence2")',
             ("tests/test_glue_tasks.py::test_stsb_scores_metrics_and_file",
              "tests/test_glue_tasks.py::test_mnli_splits_columns_and_two_submission_files")),
    Mutation("tsv_ids_row_numbers", "every GLUE .tsv id replaced by the row number", "fine_tune/tasks/columns.py",
             "                idx = int(cols[pos[layout.idx]])", "                idx = len(examples)",
             ("tests/test_glue_tasks.py::test_mnli_splits_columns_and_two_submission_files",)),
    Mutation("regression_submission_2dp", "STS-B's submission scores written with 2 decimals instead of 3",
             "fine_tune/tasks/task.py", 'f"{float(p):.3f}"', 'f"{float(p):.2f}"',
             ("tests/test_glue_tasks.py::test_stsb_scores_metrics_and_file",)),
    Mutation("eval_regression_labels_int", "the evaluation's stored gold scores of a regression task cast to integers",
             "fine_tune/evaluate.py", "labels=np.asarray(labels, dtype=np.float32 if task.regression else np.int16)",
             "labels=np.asarray(labels, dtype=np.int16)",
             ("tests/test_glue_tasks.py::test_stsb_fine_tune_logits_offline_kd_eval_and_file",)),
    Mutation("user_id_ignored", "a task of your own ignores its id column (rows numbered instead)",
             "fine_tune/tasks/user.py", "                idx = int(raw)\n", "                idx = len(examples)\n",
             ("tests/test_user_tasks.py::test_labels_follow_the_declared_order_through_parse_and_the_prediction_file",)),
    Mutation("user_tsv_read_as_csv", "a task of your own reads .tsv files as comma-separated",
             "fine_tune/tasks/user.py", 'delimiter="\\t" if suffix == ".tsv" else ","', 'delimiter=","',
             ("tests/test_user_tasks.py::test_labels_follow_the_declared_order_through_parse_and_the_prediction_file",)),
    Mutation("user_regression_truncated", "a regression task of your own truncates its scores to whole numbers",
             "fine_tune/tasks/user.py", 'label = score(raw, where, repr(spec["label"]))',
             'label = float(int(score(raw, where, repr(spec["label"]))))',
             ("tests/test_user_tasks.py::test_the_definitions_defaults_and_options",)),
    Mutation("user_val_before_dev", "a task of your own picks val over dev as its default dev split",
             "fine_tune/tasks/registry.py", 'for s in ("dev", "val") if s in labelled', 'for s in ("val", "dev") if s in labelled',
             ("tests/test_user_tasks.py::test_the_definitions_defaults_and_options",)),
    Mutation("user_only_test_unlabelled", "a task of your own treats only the split named exactly test as unlabelled",
             "fine_tune/tasks/registry.py", 'if s.startswith("test")]', 'if s == "test"]',
             ("tests/test_user_tasks.py::test_the_definitions_defaults_and_options",)),
    Mutation("user_main_metric_last", "a task of your own defaults its main metric to the last metric, not the first",
             "fine_tune/tasks/user.py", 'main = spec.get("main_metric") or metrics[0]',
             'main = spec.get("main_metric") or metrics[-1]',
             ("tests/test_user_tasks.py::test_the_definitions_defaults_and_options",)),
    Mutation("hf_class_label_as_int", "a Hugging Face ClassLabel column is written as its integer, not its name",
             "fine_tune/tasks/user.py", "row[label] = names[row[label]]", "row[label] = str(row[label])",
             ("tests/test_user_tasks.py::test_a_hugging_face_class_label_is_written_as_its_name",)),
    Mutation("count_rows_crlf_blank", "a blank CRLF line counts as a data row in the download's row check",
             "fine_tune/tasks/download.py", 'if line.strip(b"\\r\\n"):', 'if line.strip(b"\\n"):',
             ("tests/test_download.py::test_count_rows",)),
    Mutation("verify_only_more_rows", "the download's row check misses files with too few rows",
             "fine_tune/tasks/download.py", "        if rows != expected:", "        if rows > expected:",
             ("tests/test_download.py::test_wrong_row_count_raises_naming_file_and_counts",)),
    Mutation("ax_in_superglue", "download_data.py --task superglue also fetches GLUE's AX",
             "fine_tune/tasks/download.py", '"superglue": ("boolq", "cb", "rte_superglue", "axb", "axg")}',
             '"superglue": ("boolq", "cb", "rte_superglue", "axb", "axg", "ax")}',
             ("tests/test_download.py::test_table_holds_official_sources",)),
    # ---- methods built from their scripts' flags: every option reaches the method, both paddings, projections -
    Mutation('tinybert_prediction_temperature_twice', "TinyBERT's prediction stage divides the logits by T twice",
             'fine_tune/methods/tinybert.py', 'parts["soft_loss"] = soft_cross_entropy(student.logits, teacher.logits, self.temperature)',
             'parts["soft_loss"] = soft_cross_entropy(student.logits / self.temperature, teacher.logits / self.temperature, self.temperature)',
             ('tests/test_attention_losses.py::test_tinybert_prediction_stage_from_its_flags_is_the_released_soft_cross_entropy',)),
    Mutation('tinybert_prediction_hard_weight_ignored', "TinyBERT's prediction stage adds the hard loss unweighted",
             'fine_tune/methods/tinybert.py', '                loss = loss + self.hard_weight * parts["hard_loss"]\n',
             '                loss = loss + parts["hard_loss"]\n',
             ('tests/test_attention_losses.py::test_tinybert_prediction_stage_from_its_flags_is_the_released_soft_cross_entropy',)),
    Mutation('tinybert_padding_not_plumbed', "run_tinybert_distil.py's --padding dynamic never reaches the method (unmasked means)",
             'fine_tune/methods/tinybert.py', 'attention=settings["tinybert"].tinybert_attention,\n                   padding=settings.padding,',
             'attention=settings["tinybert"].tinybert_attention,',
             ('tests/test_attention_losses.py::test_tinybert_intermediate_stage_from_its_flags_matches_the_equations[dynamic-same_width-per_head]',)),
    Mutation('tinybert_attention_mode_not_plumbed', '--tinybert_attention head_mean never reaches the method',
             'fine_tune/methods/tinybert.py', 'attention=settings["tinybert"].tinybert_attention,',
             'attention="per_head",',
             ('tests/test_attention_losses.py::test_tinybert_intermediate_stage_from_its_flags_matches_the_equations[max_length-same_width-head_mean]',)),
    Mutation('tinybert_embedding_unmasked', "TinyBERT's embedding MSE keeps the padding positions under --padding dynamic",
             'fine_tune/methods/tinybert.py', 'embedding = hidden_mse(student.embeddings, teacher.embeddings.to(dev), mask, self.masked)',
             'embedding = hidden_mse(student.embeddings, teacher.embeddings.to(dev), mask, False)',
             ('tests/test_attention_losses.py::test_tinybert_intermediate_stage_from_its_flags_matches_the_equations[dynamic-same_width-per_head]',)),
    Mutation('tinybert_embedding_without_mu', "TinyBERT's embedding loss is not weighted by mu",
             'fine_tune/methods/tinybert.py', '        parts["embedding_loss"] = self.mu * embedding\n',
             '        parts["embedding_loss"] = embedding\n',
             ('tests/test_attention_losses.py::test_tinybert_intermediate_stage_from_its_flags_matches_the_equations[max_length-same_width-per_head]',)),
    Mutation('tinybert_padding_queries_kept', "TinyBERT's masked attention MSE sums the padding query rows",
             'fine_tune/methods/tinybert.py', '                sq, tq = sq * _token_mask(mask, sq), tq * _token_mask(mask, tq)\n',
             '                pass\n',
             ('tests/test_attention_losses.py::test_tinybert_intermediate_stage_from_its_flags_matches_the_equations[dynamic-same_width-per_head]',)),
    Mutation('layerwise_padding_not_plumbed', "the layer-wise scripts' --padding dynamic never reaches LAD/PKD/ALP-KD (unmasked losses)",
             'fine_tune/methods/layerwise.py', 'd.softmax_temp, mu, padding=settings.padding,',
             'd.softmax_temp, mu,',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[pkd_skip-dynamic-same_width]',)),
    Mutation('layerwise_temperature_not_plumbed', '--softmax_temp never reaches a layer-wise method (T stays 1)',
             'fine_tune/methods/layerwise.py', 'd.hard_weight, d.soft_weight,\n                   d.softmax_temp, mu,',
             'd.hard_weight, d.soft_weight,\n                   1.0, mu,',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad-max_length-same_width]',)),
    Mutation('masked_mse_over_padding', 'the masked hidden MSE divides by every position, padding included',
             'fine_tune/methods/layerwise.py', '    return (x * m).sum() / m.sum().clamp_min(1)\n',
             '    return (x * m).mean()\n',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[pkd_skip-dynamic-same_width]',)),
    Mutation('alp_mode_not_plumbed', '--alp_exp never reaches ALP-KD (always alp-kd-hidden)',
             'fine_tune/methods/alp.py', 'return {"mode": settings["alp"].alp_exp}',
             'return {"mode": "alp-kd-hidden"}',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[alp_kd_hidden_v2-max_length-same_width]',)),
    Mutation('pkd_strategy_not_plumbed', '--pkd_strategy last never reaches PKD (always skip)',
             'fine_tune/methods/pkd.py', '"strategy": settings["pkd"].pkd_strategy,',
             '"strategy": "skip",',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[pkd_last-max_length-same_width]',)),
    Mutation('pkd_last_off_by_one', 'PKD-last matches teacher layers one below the top ones',
             'fine_tune/methods/pkd.py', '[num_teacher_layers - num_student_layers + j for j',
             '[num_teacher_layers - num_student_layers + j - 1 for j',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[pkd_last-max_length-same_width]',)),
    Mutation('lad_gate_layernorm_unmasked', "LAD's gates keep the fixed-length LayerNorm under --padding dynamic",
             'fine_tune/methods/lad.py', '        return teacher.attention_mask.to(hidden[0].device) if self.masked else None\n',
             '        return None\n',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad-dynamic-same_width]',)),
    Mutation('gate_mean_over_padding', 'the logged gate means include padding positions under --padding dynamic',
             'fine_tune/methods/lad.py', 'masked_mean(g, teacher.attention_mask.to(g.device)) if self.masked else g.mean()',
             'g.mean()',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad-dynamic-same_width]',)),
    Mutation('lad_no_pair_swapped', "LAD-NO's gate reads the upper layer of its pair",
             'fine_tune/methods/lad.py', 'self.gates[j - 1].mix(th[lo - 1], th[hi - 1], mask)',
             'self.gates[j - 1].mix(th[hi - 1], th[lo - 1], mask)',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad_no-max_length-same_width]',)),
    Mutation('projection_map_shifted', "student layer j's hidden states go through the next layer's width projection",
             'fine_tune/models/projection.py', 'self.maps[0 if self.shared else layer - 1]',
             'self.maps[0 if self.shared else layer % len(self.maps)]',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[pkd_skip-max_length-projected]',)),
    Mutation('soft_loss_t_not_squared', 'the soft loss is scaled by T instead of T^2',
             'fine_tune/methods/logits_kd.py', 'parts["soft_loss"] = kl * temperature**2',
             'parts["soft_loss"] = kl * temperature',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad-max_length-same_width]',)),
    Mutation('minilm_teacher_layer_not_plumbed', '--minilm_teacher_layer never reaches MiniLM (always the last layer)',
             'fine_tune/methods/minilm.py', '"teacher_layer": settings["minilm"].minilm_teacher_layer}',
             '"teacher_layer": None}',
             ('tests/test_attention_losses.py::test_minilm_from_its_flags_matches_the_equations[minilm-max_length]',)),
    Mutation('minilm_relation_heads_not_plumbed', '--relation_heads never reaches MiniLM (v1 instead of v2)',
             'fine_tune/methods/minilm.py', '"relation_heads": settings["minilm"].relation_heads,',
             '"relation_heads": None,',
             ('tests/test_attention_losses.py::test_minilm_from_its_flags_matches_the_equations[minilmv2-max_length]',)),
    Mutation('gate_lr_not_plumbed', "--gate_lr never reaches the gates' optimiser (the default)",
             'fine_tune/methods/lad.py', 'lr=self.gate_lr, beta1=self.gate_beta1,',
             'lr=1e-5, beta1=self.gate_beta1,',
             ('tests/test_method_registry.py::test_the_gate_flags_reach_the_gated_methods[lad]',)),
    Mutation('gate_max_norm_not_plumbed', "--gate_max_norm never reaches the gates' clipping",
             'fine_tune/methods/lad.py', 'max_norm=self.gate_max_norm, total_step=total',
             'max_norm=1.0, total_step=total',
             ('tests/test_method_registry.py::test_the_gate_flags_reach_the_gated_methods[lad_no]',)),
    Mutation('tinybert_ignores_padding_always', "TinyBERT's intermediate stage under --padding max_length lets the padding-free forward drop the padding positions its unmasked means read",
             'fine_tune/methods/tinybert.py', '        return not self.intermediate or self.masked\n',
             '        return True\n',
             ('tests/test_attention_losses.py::test_tinybert_intermediate_stage_from_its_flags_matches_the_equations[max_length-same_width-per_head]',)),
    Mutation('layerwise_ignores_padding_always', "a layer-wise method's full-sequence MSE lets the padding-free forward drop the padding positions",
             'fine_tune/methods/layerwise.py', '        return self.mu == 0 or self.masked\n',
             '        return True\n',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[pkd_skip-max_length-same_width]',)),
    Mutation('projection_default_init', "the width projection keeps PyTorch's default initialisation instead of N(0, 0.02)",
             'fine_tune/models/projection.py', '            torch.nn.init.normal_(m.weight, std=0.02)\n',
             '',
             ('tests/test_layerwise_methods.py::test_width_projection_layout_and_initialisation',)),
    Mutation('minilm_student_layer_off_by_one', "MiniLM reads the student's second-to-last layer",
             'fine_tune/methods/minilm.py', 'sq, sk, sv = student.attention_inputs[-1]',
             'sq, sk, sv = student.attention_inputs[-2]',
             ('tests/test_attention_losses.py::test_minilm_from_its_flags_matches_the_equations[minilm-max_length]',)),
    Mutation('alp_map_over_padding', "ALP-KD's heat-map averages the attention weights over padding tokens too",
             'fine_tune/methods/alp.py', 'out.append((w * mask[..., None]).sum((0, 1)) / mask.sum().clamp_min(1))',
             'out.append(w.mean((0, 1)))',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[alp_kd_hidden-max_length-same_width]',)),
    Mutation('lad_no_map_swapped', "LAD-NO's heat-map puts g on the lower layer of each pair",
             'fine_tune/methods/lad.py', 'w[j - 1, hi - 1], w[j - 1, lo - 1] = g, 1 - g',
             'w[j - 1, lo - 1], w[j - 1, hi - 1] = g, 1 - g',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad_no-max_length-same_width]',)),
    Mutation('lad_map_chain_unmasked', "LAD's heat-map chains the gates with the fixed-length LayerNorm under --padding dynamic",
             'fine_tune/methods/lad.py', 'aggregate_chain(self.gates, th, upto, values, self._gate_mask(teacher, th))',
             'aggregate_chain(self.gates, th, upto, values, None)',
             ('tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation[lad-dynamic-same_width]',)),
    Mutation('hidden_only_needs_no_teacher', "a hidden-loss-only layer-wise run (soft_weight 0) skips the teacher's forward",
             'fine_tune/methods/layerwise.py', '        return bool(self.soft_weight or self.mu)\n',
             '        return bool(self.soft_weight)\n',
             ('tests/test_layerwise_methods.py::test_mu_zero_is_logits_only_and_hard_only_needs_no_teacher',)),
    # ---- the collator, the streams, the padding-free forward, dropout, compile, allocator (issue 27) -----------
    Mutation('collator_index_not_rows', "the collator's index is the position in the batch, not the row's position in the file",
             'fine_tune/batching.py', '"index": torch.from_numpy(rows),',
             '"index": torch.arange(n),',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_width_of_the_file', "dynamic padding pads every batch to the file's longest row",
             'fine_tune/batching.py', 'width = int(lengths.max()) if',
             'width = int(self._lengths.max()) if',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_token_types_dropped', 'the collator leaves every token type 0 (the second segment is lost)',
             'fine_tune/batching.py', '            types[i, :ln] = self.f.token_type_ids[s:s + ln]\n',
             '',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_pads_with_zero', "batches are padded with id 0 instead of the tokenizer's pad id",
             'fine_tune/batching.py', 'ids = np.full((n, width), self.pad, dtype=np.int64)',
             'ids = np.zeros((n, width), dtype=np.int64)',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_mask_left_aligned', 'the attention mask marks the last positions instead of the real tokens',
             'fine_tune/batching.py', '            mask[i, :ln] = 1\n',
             '            mask[i, width - ln:] = 1\n',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_labels_by_batch_position', "labels are taken from the first rows of the file, not the batch's rows",
             'fine_tune/batching.py', 'batch["labels"] = torch.from_numpy(self.f.labels[rows])',
             'batch["labels"] = torch.from_numpy(self.f.labels[:n])',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_teacher_logits_by_batch_position', "teacher logits are taken from the first rows, not the batch's rows",
             'fine_tune/batching.py', 'self.teacher_logits[torch.from_numpy(rows)]',
             'self.teacher_logits[:n]',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('collator_layout_of_max_seq_len', "the host-built layout is planned for max_seq_len, not the batch's width",
             'fine_tune/batching.py', 'layout = self.layout(lengths, width)',
             'layout = self.layout(lengths, self.max_seq_len)',
             ('tests/test_dynamic_padding.py::test_the_collator_pads_exactly_the_rows_it_is_given',)),
    Mutation('stream_drops_last_partial_batch', 'each epoch drops its last partial micro-batch (drop_last=True)',
             'fine_tune/batching.py', 'self.per_epoch = math.ceil(num_rows / micro_batch)',
             'self.per_epoch = num_rows // micro_batch',
             ('tests/test_group_by_length.py::test_plain_stream_is_the_documented_seeded_shuffle',)),
    Mutation('stream_seed_formula', "an epoch's shuffle is seeded with seed + epoch (seed 5's epoch 1 is seed 6's epoch 0)",
             'fine_tune/batching.py', 'manual_seed(self.seed * 1_000_003 + epoch)',
             'manual_seed(self.seed + epoch)',
             ('tests/test_group_by_length.py::test_plain_stream_is_the_documented_seeded_shuffle',)),
    Mutation('grouped_sort_unstable', '--group_by_length sorts each mega-batch with an unstable sort (ties reordered)',
             'fine_tune/batching.py', 'self.lengths[chunk].astype(np.int64), kind="stable")',
             'self.lengths[chunk].astype(np.int64), kind="quicksort")',
             ('tests/test_group_by_length.py::test_grouped_stream_is_the_documented_algorithm',)),
    Mutation('grouped_sort_ascending', '--group_by_length sorts each mega-batch shortest first (the short micro-batch gets the longest rows)',
             'fine_tune/batching.py', 'chunk[np.argsort(-self.lengths[chunk]',
             'chunk[np.argsort(self.lengths[chunk]',
             ('tests/test_group_by_length.py::test_grouped_stream_is_the_documented_algorithm',)),
    Mutation('grouped_mega_batch_size', '--group_by_length mega-batches of 64 micro-batches instead of 50',
             'fine_tune/batching.py', '    MEGA_BATCHES = 50\n',
             '    MEGA_BATCHES = 64\n',
             ('tests/test_group_by_length.py::test_grouped_stream_is_the_documented_algorithm',)),
    Mutation('grouped_order_fresh_generator', "the micro-batch order is drawn from a fresh generator, not the epoch's",
             'fine_tune/batching.py', 'order = torch.randperm(len(batches), generator=g).tolist()',
             'order = torch.randperm(len(batches), generator=self._generator(epoch)).tolist()',
             ('tests/test_group_by_length.py::test_grouped_stream_is_the_documented_algorithm',)),
    Mutation('eval_batches_longest_first', 'evaluation batches in decreasing length (ties in reverse file order)',
             'fine_tune/batching.py', 'order = np.argsort(lengths, kind="stable") if',
             'order = np.argsort(lengths)[::-1] if',
             ('tests/test_dynamic_padding.py::test_evaluation_batches_are_length_sorted_and_cover_every_row_once',)),
    Mutation('packing_row_stride_of_longest', 'the packing strides rows by the longest length, not the padded width (fixed padding)',
             'fine_tune/models/padding_free.py', 'np.repeat(order, sorted_lens) * seq + positions',
             'np.repeat(order, sorted_lens) * int(sorted_lens[0]) + positions',
             ('tests/test_padding_free.py::test_forward_matches_hugging_face_on_real_tokens',)),
    Mutation('packing_cls_rows_sorted', 'the padding-free forward pools the [CLS] rows in length order, not batch order',
             'fine_tune/models/padding_free.py', 'first[order] = starts[:-1]',
             'first[:] = starts[:-1]',
             ('tests/test_padding_free.py::test_forward_matches_hugging_face_on_real_tokens',)),
    Mutation('padding_free_token_types_dropped', 'the padding-free forward embeds every token as type 0',
             'fine_tune/models/padding_free.py', 'types = pk.pack(token_type_ids) if token_type_ids is not None else torch.zeros_like(ids)',
             'types = torch.zeros_like(ids)',
             ('tests/test_padding_free.py::test_forward_matches_hugging_face_on_real_tokens',)),
    Mutation('grid_layout_any_row_full', "the grid's host layout drops the key mask when any row (not every row) is full",
             'fine_tune/models/padding_free.py', 'GridLayout(bool((lengths == width).all()))',
             'GridLayout(bool((lengths == width).any()))',
             ('tests/test_padding_free.py::test_the_training_forward_with_a_host_built_layout_equals_hugging_face',)),
    Mutation('forward_hidden_states_off_by_one', 'forward() hands the losses the embeddings as layer 1 (layers shifted by one)',
             'fine_tune/models/forward.py', 'hidden_states=tuple(out.hidden_states[1:]) if hidden',
             'hidden_states=tuple(out.hidden_states[:-1]) if hidden',
             ('tests/test_padding_free.py::test_the_training_forward_with_a_host_built_layout_equals_hugging_face',)),
    Mutation('forward_never_gives_token_types', 'forward() never passes token type ids (BERT sees one segment)',
             'fine_tune/models/forward.py', 'keys = INPUT_KEYS if reads_token_types(model) else ("input_ids", "attention_mask")',
             'keys = ("input_ids", "attention_mask")',
             ('tests/test_padding_free.py::test_the_training_forward_with_a_host_built_layout_equals_hugging_face',)),
    Mutation('cheap_dropout_p_truncated', 'the cheaper dropout truncates p * 2^16 instead of rounding it',
             'fine_tune/models/dropout.py', '    cut = round(p * _LEVELS)\n',
             '    cut = int(p * _LEVELS)\n',
             ('tests/test_dropout.py::test_the_mask_is_the_documented_function_of_the_random_words',)),
    Mutation('cheap_dropout_strict_cut', 'the cheaper dropout keeps u > cut (drops one level too many)',
             'fine_tune/models/dropout.py', '    return u >= cut - (1 << 15),',
             '    return u > cut - (1 << 15),',
             ('tests/test_dropout.py::test_the_mask_is_the_documented_function_of_the_random_words',)),
    Mutation('compile_static_shapes', '--compile compiles with static shapes (one graph per batch width)',
             'fine_tune/engine/trainer.py', '            self.model = torch.compile(self.model, backend=backend, dynamic=True)\n',
             '            self.model = torch.compile(self.model, backend=backend, dynamic=False)\n',
             ('tests/test_compile_option.py::test_compile_trains_to_the_same_weights',)),
    Mutation('compile_student_only', "--compile leaves the teacher's forward uncompiled",
             'fine_tune/engine/trainer.py', '                self.teacher_model = torch.compile(self.teacher_model, backend=backend, dynamic=True)\n',
             '                pass\n',
             ('tests/test_compile_option.py::test_compile_captures_the_teacher_forward_too',)),
    Mutation('group_by_length_ignored', '--group_by_length is recorded but the trainer keeps the plain order',
             'fine_tune/engine/trainer.py', 'lengths if s.group_by_length else None)',
             'None)',
             ('tests/test_group_by_length.py::test_fine_tune_with_group_by_length',)),
    Mutation('allocator_mmap_threshold_default', "the mmap threshold stays at glibc's 128 KB (activations come from mmap)",
             'fine_tune/engine/allocator.py', 'MMAP_THRESHOLD = 32 * 1024 * 1024',
             'MMAP_THRESHOLD = 128 * 1024',
             ('tests/test_allocator.py::test_a_20_mb_activation_comes_from_the_heap_and_stays',)),
    Mutation('allocator_trims_freed_memory', "freed memory above 128 KB at the heap's top goes back to the kernel",
             'fine_tune/engine/allocator.py', 'TRIM_THRESHOLD = 1 << 30',
             'TRIM_THRESHOLD = 128 * 1024',
             ('tests/test_allocator.py::test_a_20_mb_activation_comes_from_the_heap_and_stays',)),
    # ---- clipping per parameter group, logging windows, locks and resources on failure, races (issue 27) -------
    Mutation("gate_clip_joint", "the LAD gates are clipped together (one norm over all gates), not each on its own",
             "fine_tune/engine/trainer.py",
             "                for m in part.modules:\n                    norms.append(torch.nn.utils.clip_grad_norm_(m.parameters(), part.settings.max_norm))\n",
             "                norms.append(torch.nn.utils.clip_grad_norm_(part.params, part.settings.max_norm))\n",
             ("tests/test_optimiser.py::test_each_gate_is_clipped_with_its_own_norm_and_the_student_as_a_whole",)),
    Mutation("gate_clip_with_student_norm", "the gates are clipped with the student's --max_norm, not --gate_max_norm",
             "fine_tune/engine/trainer.py",
             "norms.append(torch.nn.utils.clip_grad_norm_(m.parameters(), part.settings.max_norm))",
             "norms.append(torch.nn.utils.clip_grad_norm_(m.parameters(), self.s.optimiser.max_norm))",
             ("tests/test_optimiser.py::test_each_gate_is_clipped_with_its_own_norm_and_the_student_as_a_whole",)),
    Mutation("student_not_clipped", "the student's gradients are never clipped to --max_norm",
             "fine_tune/engine/trainer.py",
             "norm = torch.nn.utils.clip_grad_norm_(part.params, part.settings.max_norm)",
             'norm = torch.nn.utils.clip_grad_norm_(part.params, float("inf"))',
             ("tests/test_optimiser.py::test_each_gate_is_clipped_with_its_own_norm_and_the_student_as_a_whole",)),
    Mutation("grad_norm_after_clipping", "the logged grad_norm is the norm after clipping, not before",
             "fine_tune/engine/trainer.py",
             '                if part.name == "student":\n                    grad_norm = norm\n',
             '                if part.name == "student":\n                    grad_norm = torch.nn.utils.clip_grad_norm_(part.params, 1e9)\n',
             ("tests/test_engine.py::test_a_logged_window_is_the_mean_of_its_steps",)),
    Mutation("log_window_mean_over_log_step", "a logged loss is divided by --log_step, not by its window's steps "
             "(wrong for the short last window)", "fine_tune/engine/trainer.py",
             "last = {k: (v / self.window_steps).item() for k, v in self.sums.items()}",
             "last = {k: (v / s.log_step).item() for k, v in self.sums.items()}",
             ("tests/test_engine.py::test_a_logged_window_is_the_mean_of_its_steps",)),
    Mutation("grad_norm_window_sum", "the logged grad_norm is divided by --log_step, not by the window's applied steps",
             "fine_tune/engine/trainer.py", "(self.grad_norm_sum / applied).item()",
             "(self.grad_norm_sum / s.log_step).item()",
             ("tests/test_engine.py::test_a_logged_window_is_the_mean_of_its_steps",)),
    Mutation("lock_kept_after_failure", "a workflow that fails in-process keeps the experiment lock",
             "fine_tune/locking.py", "        finally:\n            release_all()\n", "        finally:\n            pass\n",
             ("tests/test_never_lose_a_run.py::test_a_workflow_that_fails_in_process_releases_what_it_holds",)),
    Mutation("holder_note_left_on_release", "a released lock leaves its .writer.json behind",
             "fine_tune/locking.py", "            (folder / HOLDER_FILE).unlink(missing_ok=True)\n", "",
             ("tests/test_never_lose_a_run.py::test_a_workflow_that_fails_in_process_releases_what_it_holds",)),
    Mutation("tensorboard_writer_left_open_on_failure", "a run that fails leaves its TensorBoard writer (and thread) open",
             "fine_tune/engine/trainer.py",
             "            if writer is not None:\n                writer.close()\n            self.release()\n",
             "            self.release()\n",
             ("tests/test_never_lose_a_run.py::test_a_workflow_that_fails_in_process_releases_what_it_holds",)),
    Mutation("experiment_lock_shared", "the experiment lock is shared: two runs that reach it at once both write",
             "fine_tune/locking.py", "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
             "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
             ("tests/test_never_lose_a_run.py::test_two_runs_started_at_once_write_one_event_stream",)),
    Mutation("tokenisation_cache_never_read", "the tokenisation cache is written but never read back",
             "fine_tune/batching.py",
             '    if path.is_file():\n        try:\n            state = torch.load(path, map_location="cpu", weights_only=True)',
             '    if False:\n        try:\n            state = torch.load(path, map_location="cpu", weights_only=True)',
             ("tests/test_run_safety.py::test_two_processes_share_a_tokenisation_cache",)),
    Mutation("resume_window_sums_dropped", "a resumed run forgets the loss sums of its open logging window",
             "fine_tune/engine/trainer.py",
             '        self.sums = {k: v.to(self.device) for k, v in w["sums"].items()}\n', "        self.sums = {}\n",
             (f"{RESUME}[fine_tune]",)),
    Mutation("resume_window_counts_dropped", "a resumed run forgets the step and example counts of its open window",
             "fine_tune/engine/trainer.py",
             '        self.window_steps, self.window_examples = w["steps"], w["examples"]\n',
             "        self.window_steps, self.window_examples = 0, 0\n", (f"{RESUME}[fine_tune]",)),
    Mutation("resume_window_grad_norm_dropped", "a resumed run forgets the grad-norm sum of its open window",
             "fine_tune/engine/trainer.py", '        self.grad_norm_sum = w["grad_norm_sum"].to(self.device)\n',
             "        self.grad_norm_sum = torch.zeros((), device=self.device)\n", (f"{RESUME}[fine_tune]",)),
    # ---- results tables, selection, bootstrap, config re-runs, exports, e2e ids (issue 27) ----------------------
    Mutation("seed_std_population", "a seed group's ± is the population std (n) instead of the sample std (n - 1)", "fine_tune/results.py",
             '"std": statistics.stdev(values) if n > 1 else None',
             '"std": statistics.pstdev(values) if n > 1 else None',
             ('tests/test_results.py::test_table_best_on_reported_split_groups_seeds',)),
    Mutation("inference_rate_mean_not_median", "a seed group's inference examples/s is the mean over its seeds, not the median", "fine_tune/results.py",
             '"examples_per_s": statistics.median(r for _, r, _ in rates) if rates else None',
             '"examples_per_s": statistics.mean(r for _, r, _ in rates) if rates else None',
             ('tests/test_results.py::test_table_best_on_reported_split_groups_seeds',)),
    Mutation("inference_rate_of_first_split", "the inference examples/s come from the first reported split's table, not the last", "fine_tune/results.py",
             'table = e.tables.get(splits[-1]) if splits else None',
             'table = e.tables.get(splits[0]) if splits else None',
             ('tests/test_results.py::test_table_best_on_reported_split_groups_seeds',)),
    Mutation("teacher_size_ignores_tckpt", "the teacher's parameters/size are its latest checkpoint's, not the --tckpt one distilled from", "fine_tune/results.py",
             'tsize = _size(teacher, first.config.get("tckpt"))',
             'tsize = _size(teacher, None)',
             ('tests/test_results.py::test_table_best_on_reported_split_groups_seeds',)),
    Mutation("seed_group_in_folder_order", "a seed group lists its runs (ckpts, values, seeds) in folder-name order, not seed order", "fine_tune/results.py",
             'members.sort(key=lambda e: (e.config.get("seed") is None, e.config.get("seed"), e.name))',
             'members.sort(key=lambda e: e.name)',
             ('tests/test_results.py::test_table_best_on_reported_split_groups_seeds',)),
    Mutation("p_not_better_strict", "the bootstrap's share of resamples 'not better' leaves out ties (difference exactly 0)", "fine_tune/results.py",
             'float((stats <= 0).mean()))\n\n\ndef paired_bootstrap_metric',
             'float((stats < 0).mean()))\n\n\ndef paired_bootstrap_metric',
             ('tests/test_results.py::test_paired_bootstrap_counts_ties_as_not_better',)),
    Mutation("bootstrap_seed_ignored", "results_table.py --bootstrap_seed does not reach the bootstrap", "fine_tune/results.py",
             'compare(exp_root, task, a, b, split, rule, plan.resamples, plan.bootstrap_seed)',
             'compare(exp_root, task, a, b, split, rule, plan.resamples)',
             ('tests/test_results.py::test_compare_reads_selected_checkpoints',)),
    Mutation("bootstrap_resamples_ignored", "results_table.py --resamples does not reach the bootstrap (the default 10000 is used)", "fine_tune/results.py",
             'compare(exp_root, task, a, b, split, rule, plan.resamples, plan.bootstrap_seed)',
             'compare(exp_root, task, a, b, split, rule, seed=plan.bootstrap_seed)',
             ('tests/test_results.py::test_compare_reads_selected_checkpoints',)),
    Mutation("ckpt_best_on_accuracy", "--ckpt best picks the best accuracy, not the task's main metric (CoLA: MCC)", "fine_tune/selection.py",
             '    row = best_row(table["rows"], metric)\n',
             '    row = best_row(table["rows"])\n',
             ('tests/test_results.py::test_main_metric_chooses_the_checkpoint_for_tables_ckpt_best_and_compare',)),
    Mutation("table_selects_on_accuracy", "the results table chooses checkpoints on accuracy, not the task's main metric", "fine_tune/results.py",
             'step, row = select_row(e.tables, s, rule, task.main_metric)',
             'step, row = select_row(e.tables, s, rule)',
             ('tests/test_results.py::test_main_metric_chooses_the_checkpoint_for_tables_ckpt_best_and_compare',)),
    Mutation("compare_bootstraps_accuracy", "--compare bootstraps accuracy for a task whose main metric is not a mean (CoLA: MCC)", "fine_tune/results.py",
             '    if metric == "accuracy":\n        return paired_bootstrap(',
             '    if True:\n        return paired_bootstrap(',
             ('tests/test_results.py::test_main_metric_chooses_the_checkpoint_for_tables_ckpt_best_and_compare',)),
    Mutation("ckpt_last_is_oldest", "--ckpt last (and the default) resolves to the oldest checkpoint", "fine_tune/selection.py",
             'return have[-1], f"model-{have[-1]}.pt (latest)"',
             'return have[0], f"model-{have[0]}.pt (latest)"',
             ('tests/test_results.py::test_main_metric_chooses_the_checkpoint_for_tables_ckpt_best_and_compare',)),
    Mutation("bootstrap_90_percent_interval", "the bootstrap interval is the 5-95 percentiles (90%), not 2.5-97.5", "fine_tune/results.py",
             '    low, high = np.percentile(stats, [2.5, 97.5])\n    return Bootstrap(split, n, float(a.mean())',
             '    low, high = np.percentile(stats, [5, 95])\n    return Bootstrap(split, n, float(a.mean())',
             ('tests/test_results.py::test_paired_bootstrap_matches_normal_interval',)),
    Mutation("predictions_idx_row_numbers", "eval-{split}-predictions.npz stores row numbers instead of the data file's ids", "fine_tune/evaluate.py",
             'idx=np.asarray([ex.idx for ex in examples], dtype=np.int64)',
             'idx=np.arange(len(examples), dtype=np.int64)',
             ('tests/test_results.py::test_ckpt_best_submission_and_export_round_trip',)),
    Mutation("ckpt_best_select_on_ignored", "generate_test_prediction.py/export_model.py --select_on is ignored (--ckpt best always on the dev split)", "fine_tune/plan/inference.py",
             'select_on = c.select_on or task.dev_split',
             'select_on = task.dev_split',
             ('tests/test_results.py::test_ckpt_best_submission_and_export_round_trip',)),
    Mutation("compare_split_ignored", "results_table.py --compare_split is ignored (always the task's dev split)", "fine_tune/plan/inference.py",
             'split = args.compare_split or task.dev_split',
             'split = task.dev_split',
             ('tests/test_results.py::test_compare_reads_selected_checkpoints',)),
    Mutation("varying_fields_one_sided", "a field only one kind of run has (teacher_exp) counts as a varying hyper-parameter column", "fine_tune/results.py",
             'return [k for k in keys if len({repr(e.config[k]) for e in experiments if k in e.config}) > 1]',
             'return [k for k in keys if len({repr(e.config.get(k)) for e in experiments}) > 1]',
             ('tests/test_results.py::test_table_best_on_reported_split_groups_seeds',)),
    Mutation("onnx_speed_newest_by_step", "the ONNX columns show the export of the highest step, not the newest export", "fine_tune/results.py",
             'found.sort(key=lambda f: f[:2])',
             'found.sort(key=lambda f: f[1])',
             ('tests/test_results_data.py::test_onnx_columns',)),
    Mutation("size_of_latest_checkpoint", "the table's params/size columns are the latest checkpoint's, not the chosen one's", "fine_tune/results.py",
             'size = _size(first.exp, chosen_steps[0] if chosen_steps else None)',
             'size = _size(first.exp, None)',
             ('tests/test_results_data.py::test_csv_and_json_hold_the_markdown_numbers',)),
    Mutation("eval_takes_training_flags_from_config", "run_fine_tune_eval.py --config takes the training run's flags (max_examples, batch_size...) from its config.json", "fine_tune/cli.py",
             'trains or name in IDENTITY_FIELDS or name not in training_fields)',
             'True)',
             ('tests/test_config_rerun.py::test_evaluation_takes_the_experiment_from_the_config',)),
    Mutation("bool_flag_override_dropped", "a boolean flag given on the command line over --config's false is dropped", "fine_tune/cli.py",
             'g.add_argument(f"--{f.name}", default=argparse.SUPPRESS, **shape)',
             'g.add_argument(f"--{f.name}", default=argparse.SUPPRESS, **shape) if kind is not bool else None',
             ('tests/test_config_rerun.py::test_override_is_recorded_and_used',)),
    Mutation("override_compared_with_default", "--config's recorded overrides compare with the flag's default, not the file's value", "fine_tune/cli.py",
             'if name in given and values[name] != from_file.get(name, fields[name].default)}',
             'if name in given and values[name] != fields[name].default}',
             ('tests/test_config_rerun.py::test_override_is_recorded_and_used',)),
    Mutation("resamples_default_changed", "results_table.py's --resamples default is not the documented 10,000", "fine_tune/settings.py",
             'resamples: int = flag(10000, "bootstrap resamples")',
             'resamples: int = flag(1000, "bootstrap resamples")',
             ('tests/test_flags.py::test_results_and_checkpoint_defaults_are_the_documented_ones',)),
    Mutation("export_labels_sorted", "the export's id2label/label2id are in sorted order, not the model's output order", "fine_tune/models/classifier.py",
             'config.id2label = {i: name for i, name in enumerate(label_names)}\n    config.label2id = {name: i for i, name in enumerate(label_names)}',
             'config.id2label = {i: name for i, name in enumerate(sorted(label_names))}\n    config.label2id = {name: i for i, name in enumerate(sorted(label_names))}',
             ('tests/test_onnx_export.py::test_a_model_without_token_types_exports_two_inputs_and_max_examples_limits_the_rows',)),
    Mutation("int8_metrics_of_fp32", "export.json's int8 metrics are computed from the fp32 ONNX logits", "fine_tune/onnx_export.py",
             '"int8": None if int8_logits is None else _metrics(task, labels, int8_logits)',
             '"int8": None if int8_logits is None else _metrics(task, labels, onnx_logits)',
             ('tests/test_onnx_export.py::test_int8_numbers_come_from_the_int8_model',)),
    Mutation("init_start_ignored", "--init_start is ignored: the student's layers are copied from the teacher's first layers", "fine_tune/models/init.py",
             '    layers = list(range(start, end + 1, step))\n',
             '    layers = list(range(1, end - start + 2, step))\n',
             ('tests/test_scripts_e2e.py::test_bert_boolq_pipeline',)),
    Mutation("saved_predictions_row_numbers", "--save_predictions files number their rows instead of the data file's ids", "fine_tune/evaluate.py",
             'lines.append(f"{ex.idx}\\t{label}\\t{int(p.argmax())}\\t"',
             'lines.append(f"{len(lines) - 1}\\t{label}\\t{int(p.argmax())}\\t"',
             ('tests/test_scripts_e2e.py::test_bert_boolq_pipeline',)),
    # identity of derived files (issue 28): each keyed by everything that decided it
    Mutation("cache_keyed_by_row_count", "the tokenisation cache is keyed by the row count, not the rows' content: a "
             "task.json edit (label order, columns) is served the old features",
             "fine_tune/batching.py", 'f"{tokenizer_fingerprint(tokenizer)}|{examples_digest(examples)}|{max_seq_len}|"',
             'f"{tokenizer_fingerprint(tokenizer)}|{len(examples)}|{max_seq_len}|"',
             ("tests/test_identity.py::test_the_tokenisation_cache_misses_on_each_input_and_hits_on_none",
              "tests/test_identity.py::test_a_task_json_edit_is_not_served_the_old_features")),
    Mutation("examples_digest_without_labels", "the rows' identity leaves out the labels: a reordered label list is a "
             "cache hit", "fine_tune/tasks/example.py", '\\x1f{e.label!r}\\x1e', '\\x1e',
             ("tests/test_identity.py::test_the_tokenisation_cache_misses_on_each_input_and_hits_on_none",)),
    Mutation("logits_identity_without_max_seq_len", "a logits set of another max_seq_len replaces the old one without "
             "--overwrite", "fine_tune/tasks/logits.py",
             '"checkpoint_sha256", "max_seq_len",\n            "examples_sha256"',
             '"checkpoint_sha256",\n            "examples_sha256"',
             ("tests/test_identity.py::test_each_identity_field_of_a_logits_set_is_named_when_it_changes",
              "tests/test_identity.py::test_a_logits_set_is_not_replaced_by_one_of_other_inputs")),
    Mutation("logits_identity_rows_not_recorded", "a logits set records no identity of its rows: the same file read "
             "under another task.json replaces it silently", "fine_tune/evaluate.py",
             'examples_sha256=examples_digest(examples)', 'examples_sha256=None',
             ("tests/test_identity.py::test_a_logits_set_is_not_replaced_by_one_of_other_inputs",)),
    Mutation("prediction_reads_current_labels", "prediction and evaluation name a run's classes by the current "
             "task.json's labels, not the ones it was trained with", "fine_tune/evaluate.py",
             '    task.check_trained_labels(config, str(exp.path))\n', '',
             ("tests/test_identity.py::test_renamed_or_reordered_labels_are_refused_where_a_model_is_read",)),
    Mutation("trained_labels_order_ignored", "a reordered label list (same names) passes the trained-labels check",
             "fine_tune/tasks/task.py", '        if before != now:',
             '        if sorted(before[0]) != sorted(now[0]) or before[1] != now[1]:',
             ("tests/test_identity.py::test_renamed_or_reordered_labels_are_refused_where_a_model_is_read",)),
    Mutation("hf_split_never_refetched", "a split fetched from Hugging Face is read as it is after task.json's hf "
             "source changed", "fine_tune/tasks/user.py",
             "        if not isinstance(have, dict) or have.get(\"source\") == want:",
             "        if True:",
             ("tests/test_identity.py::test_a_changed_hf_source_fetches_the_split_again",)),
    Mutation("hf_split_edited_file_replaced", "a fetched split edited by hand is replaced when the hf source changes",
             "fine_tune/tasks/user.py", "        if sha256_file(path) != have.get(\"sha256\"):", "        if False:",
             ("tests/test_identity.py::test_a_changed_hf_source_fetches_the_split_again",)),
    # the run plan (issue 28): methods built complete from resolved settings, one distillation entry
    Mutation("legacy_plan_race_unchecked", "a config.json written between the plan and the start resumes under a "
             "method built for a new run", "fine_tune/run/start.py", "    if legacy != plan.legacy:", "    if False:",
             ("tests/test_layerwise_scripts.py::test_a_config_written_between_plan_and_start_is_refused",)),
    Mutation("regression_not_from_task", "a regression task's method is built as a classification one",
             "fine_tune/plan/training.py", "num_class=flags.classifier.num_class, regression=task.regression,",
             "num_class=flags.classifier.num_class, regression=False,",
             ("tests/test_glue_tasks.py::test_stsb_fine_tune_logits_offline_kd_eval_and_file",)),
    Mutation("labels_dtype_not_from_task", "a regression task's scores tokenised as class indices (truncated)",
             "fine_tune/run/training.py", "plan.train.examples, plan.max_seq_len,\n                               "
             "regression=plan.task.regression)", "plan.train.examples, plan.max_seq_len,\n                               "
             "regression=False)",
             ("tests/test_glue_tasks.py::test_stsb_fine_tune_logits_offline_kd_eval_and_file",)),
    Mutation("tinybert_prediction_records_attention", "TinyBERT's prediction stage records every layer's attention "
             "projections it never reads", "fine_tune/methods/tinybert.py",
             "        return self.intermediate  # the prediction stage reads logits only",
             "        return True  # the prediction stage reads logits only",
             ("tests/test_attention_losses.py::test_tinybert_prediction_stage_from_its_flags_is_the_released_soft_cross_entropy",)),
    Mutation("pkd_build_default_summed", "a new PKD normalized_cls run is built with the summed (pre-fix) reduction",
             "fine_tune/methods/pkd.py", 'settings.legacy.get("pkd_cls_reduction", "mean")',
             'settings.legacy.get("pkd_cls_reduction", "sum")',
             ("tests/test_layerwise_methods.py::test_every_layerwise_method_from_its_flags_matches_its_equation"
              "[pkd_cls_skip-max_length-same_width]",)),
    Mutation("run_distil_ignores_method", "run_distil.py --method NAME runs another method",
             "fine_tune/cli.py", "    return name, parse_layerwise(prog, description, name, rest)",
             '    return name, parse_layerwise(prog, description, "pkd", rest)',
             ("tests/test_method_registry.py::test_run_distil_takes_each_scripts_flags_and_defaults",)),
    Mutation("best_ckpt_from_stale_evaluation", "--ckpt best chooses by an evaluation of rows the split no longer holds",
             "fine_tune/evaluate.py", '        if why:\n            raise UserError(f"--ckpt best: {why}")', "",
             ("tests/test_identity.py::test_an_evaluation_of_other_rows_never_chooses_the_best_checkpoint",)),
    Mutation("results_from_stale_evaluation", "the results table reports an evaluation of rows the split no longer holds",
             "fine_tune/results.py", "                if why:\n                    raise UserError(why)\n", "",
             ("tests/test_identity.py::test_an_evaluation_of_other_rows_never_chooses_the_best_checkpoint",)),
    Mutation("evaluation_rows_of_the_whole_split", "an evaluation of the first rows is compared with the whole split",
             "fine_tune/selection.py", 'task.load(data_root, split, table.get("max_examples"))',
             "task.load(data_root, split)",
             ("tests/test_identity.py::test_an_evaluation_of_other_rows_never_chooses_the_best_checkpoint",)),
    Mutation("partial_prediction_zipped", "a submission file of the first rows only (--max_examples) is zipped",
             "fine_tune/submission.py", '    if not record.get("complete", True):', "    if False:",
             ("tests/test_identity.py::test_a_submission_file_is_zipped_only_as_its_record_describes",)),
    Mutation("edited_prediction_zipped", "a submission file that is not the one its record describes is zipped",
             "fine_tune/submission.py", '    if record.get("sha256") != sha256_file(path):', "    if False:",
             ("tests/test_identity.py::test_a_submission_file_is_zipped_only_as_its_record_describes",)),
    Mutation("prediction_of_old_rows_zipped", "a submission file predicted on rows its split no longer holds is zipped",
             "fine_tune/submission.py", 'if examples_digest(task.load(data_root, split)) != record["examples_sha256"]:',
             "if False:",
             ("tests/test_identity.py::test_a_submission_file_is_zipped_only_as_its_record_describes",)),
    Mutation("export_without_checkpoint_identity", "an export does not record the checkpoint content it was made from",
             "fine_tune/export.py", '"checkpoint_sha256": sha256_file(ckpt_path),', '"checkpoint_sha256": None,',
             ("tests/test_onnx_export.py::test_hugging_face_export_is_unchanged_and_exports_are_not_replaced_silently",)),
    # issue 29 (started): one boundary for operating-system failures
    Mutation("os_error_traceback", "an operating-system failure no check foresaw is a traceback",
             "fine_tune/cli.py", "    except OSError as e:  # the one boundary", "    except ImportError as e:  # the one boundary",
             ("tests/test_never_lose_a_run.py::test_an_operating_system_failure_is_one_line_and_writes_nothing",)),
    Mutation("lock_release_fails_on_holder_file", "a holder file that cannot be removed turns the end of a run into a "
             "second error and keeps the lock", "fine_tune/locking.py",
             "            except OSError:\n                pass\n", "            except ImportError:\n                pass\n",
             ("tests/test_never_lose_a_run.py::test_a_lock_is_released_when_its_holder_file_cannot_be_removed",)),
    Mutation("download_usage_block", "download_data.py's flag errors print argparse's usage block (two lines or more)",
             "fine_tune/tasks/download.py", "    parser = OneLineParser(", "    parser = __import__('argparse').ArgumentParser(",
             ("tests/test_download.py::test_a_bad_flag_is_one_line",)),
    Mutation("logits_refusal_names_none", "refusing to replace a Hugging Face teacher's logits says 'logits of None "
             "checkpoint ...'", "fine_tune/tasks/logits.py", 'else f"the Hugging Face model {old.get(\'teacher_hf\') or old.get(\'checkpoint\')}")',
             'else f"{old.get(\'teacher_experiment\')} checkpoint {old.get(\'checkpoint\')}")',
             ("tests/test_identity.py::test_a_logits_set_is_not_replaced_by_one_of_other_inputs",)),
    Mutation("submission_rows_unchecked", "a submission file that predicts only some rows of its split is zipped",
             "fine_tune/submission.py", "    if ids != expected:", "    if False:",
             ("tests/test_glue_tasks.py::test_the_glue_zip_holds_exactly_the_required_files_or_is_refused",)),
    Mutation("unrecorded_submission_unchecked", "a submission file without a record is zipped unchecked",
             "fine_tune/submission.py", "        check_rows(path, task, split, data_root)\n        return\n",
             "        return\n",
             ("tests/test_glue_tasks.py::test_the_glue_zip_holds_exactly_the_required_files_or_is_refused",)),
    # Results and resume (issue 29)
    Mutation("seed_counted_per_run", "runs of one config and one seed count as several seeds (n = runs)",
             "fine_tune/results.py", 'setdefault(repr(e.config.get("seed")), [])', 'setdefault(e.name, [])',
             ("tests/test_results_truth.py::test_a_seed_counts_once_however_many_runs_it_has",)),
    Mutation("seed_run_oldest", "of several runs of one seed, the oldest evaluated counts, not the newest",
             "fine_tune/results.py", "counted = max(runs, key=lambda e: (evaluated_at(e), e.name))",
             "counted = min(runs, key=lambda e: (evaluated_at(e), e.name))",
             ("tests/test_results_truth.py::test_a_seed_counts_once_however_many_runs_it_has",)),
    Mutation("absent_checkpoint_cited", "a table (and --ckpt best) cites an evaluated checkpoint that is not on disk",
             "fine_tune/selection.py", 'rows = [r for r in table["rows"] if exp.checkpoint_path(r["ckpt"]).is_file()]',
             'rows = list(table["rows"])',
             ("tests/test_results_truth.py::test_an_evaluation_whose_checkpoint_is_absent_is_skipped_and_said",)),
    Mutation("absent_checkpoint_unsaid", "the table skips an evaluation whose checkpoint is absent without a note",
             "fine_tune/results.py", 'notes += [f"{e.name}: {absent_note(s, steps)}" for s, steps in e.absent.items()]',
             "notes += []", ("tests/test_results_truth.py::test_an_evaluation_whose_checkpoint_is_absent_is_skipped_and_said",)),
    Mutation("eval_table_before_checkpoint", "the engine writes a checkpoint's eval-SPLIT.json before the checkpoint "
             "(a kill in between leaves a table citing an absent checkpoint)", "fine_tune/engine/trainer.py",
             "            self._eval_files_due = True\n        elif",
             "            self._eval_files_due = True\n            ev.write_table(history.rows)\n        elif",
             ("tests/test_results_truth.py::test_the_engine_writes_an_evaluation_table_after_its_checkpoint",)),
    Mutation("edited_config_unchecked", "a resume does not compare config.json with the digest its resume state holds",
             "fine_tune/run/start.py", "    if recorded is None or recorded == cfg.config_digest(old):",
             "    if True:", ("tests/test_resume_hygiene.py::test_a_config_edited_by_hand_is_refused_on_resume",)),
    Mutation("config_digest_not_recorded", "the resume state does not record the digest of the run's config.json",
             "fine_tune/engine/trainer.py",
             '                **({"config_sha256": self.config_sha256} if self.config_sha256 is not None else {}),\n',
             "", ("tests/test_resume_hygiene.py::test_a_config_edited_by_hand_is_refused_on_resume",)),
    Mutation("config_digest_with_runtime_fields", "the config digest covers the runtime fields (provenance): a resumed "
             "run killed before its next checkpoint can no longer resume", "fine_tune/config.py",
             "fields = {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}", "fields = dict(config)",
             ("tests/test_resume_hygiene.py::test_a_resumed_run_killed_again_still_resumes",)),
    Mutation("model_folder_keeps_source_labels", "an experiment's model folder keeps the id2label of the folder its "
             "weights came from (or LABEL_0...), not the task's", "fine_tune/run/student.py",
             "    set_task_labels(model.config, label_names)\n", "",
             ("tests/test_resume_hygiene.py::test_every_saved_model_folder_names_the_task_labels",)),
    Mutation("prune_not_on_finished_rerun", "a finished run killed before --save_total_limit pruned keeps its old "
             "checkpoint on the re-run", "fine_tune/run/start.py", "        prune_finished(exp, limit, total_step, metric)\n",
             "", ("tests/test_resume_hygiene.py::test_a_kill_before_pruning_the_last_checkpoint_is_pruned_on_the_rerun",)),
    Mutation("prune_not_on_resume", "a resumed run prunes only at its next save (a checkpoint a kill left unpruned "
             "stays until then)", "fine_tune/engine/trainer.py",
             "            self._prune()  # a run killed after its last save, before pruning\n", "",
             ("tests/test_resume_hygiene.py::test_a_kill_before_pruning_is_pruned_when_the_run_resumes",)),
    Mutation("prune_finished_deletes_the_best", "pruning a finished run on its re-run deletes the best checkpoint of "
             "its evaluation during training", "fine_tune/run/start.py",
             'pruned = prune_checkpoints(exp, limit, step, None if best is None else best["step"]',
             "pruned = prune_checkpoints(exp, limit, step, None",
             ("tests/test_resume_hygiene.py::test_pruning_on_the_rerun_keeps_the_best_checkpoint",)),
    Mutation("prune_counts_later_checkpoints", "pruning on resume counts a later checkpoint of the killed run (and "
             "deletes the one it resumed from)", "fine_tune/engine/checkpoint.py",
             "old = [s for s in exp.checkpoints() if s <= upto][:-limit]", "old = exp.checkpoints()[:-limit]",
             ("tests/test_resume_hygiene.py::test_a_kill_before_pruning_is_pruned_when_the_run_resumes",)),
]


def copy_tree(dest: Path) -> Path:
    """The working tree (tracked and untracked files git does not ignore) at ``dest/main``, ../shared beside it."""
    dest.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    main = dest / "main"
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (main / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, main / f)
    shared = REPO.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared)
    return main


def run_tests(main: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, str, float]:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("FT_REQUIRE_ALL_TESTS", None)
    basetemp = main.parent / "pytest-tmp"  # inside the copy's folder: removed with it, failing runs' folders too
    start = time.perf_counter()
    try:
        # file order (-p no:randomly): a mutation is caught by its bug, never by an order; CI and
        # scripts/isolation_check.py find tests that depend on an order
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                               f"--basetemp={basetemp}", *tests], cwd=main, env=env, capture_output=True, text=True,
                              timeout=timeout)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out = -1, f"timed out after {timeout} s\n{e.stdout or ''}"
    return code, out, time.perf_counter() - start


def apply(main: Path, m: Mutation) -> str | None:
    """Apply ``m`` in the copy; the reason it cannot be applied, or None."""
    path = main / m.file
    text = path.read_text()
    n = text.count(m.old)
    if n != 1:
        return f"source text found {n} times in {m.file} (update the mutation)"
    path.write_text(text.replace(m.old, m.new))
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", help="run only these mutations")
    ap.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unchanged copy")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    ap.add_argument("--out", help="also write the table to this markdown file")
    ap.add_argument("--jobs", type=int, default=1, help="mutations run at once, each in its own copy (default 1)")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        print(f"error: unknown mutation(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:32s} {m.behaviour}\n{'':32s} {m.file}; tests: {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        copies: queue.Queue[Path] = queue.Queue()  # one copy of the tree per job: a job mutates only its own
        for i in range(max(1, args.jobs)):
            copies.put(copy_tree(Path(tmp) / str(i)))
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            main_copy = copies.get()
            code, out, secs = run_tests(main_copy, tests, args.timeout * 2)
            copies.put(main_copy)
            print(f"baseline: {len(tests)} test selections on the unchanged copy: exit {code} in {secs:.0f} s",
                  flush=True)
            if code != 0:
                print(out[-6000:])
                print("error: the tests fail without any mutation; fix them first", file=sys.stderr)
                return 1

        def one(m: Mutation) -> tuple:
            main_copy = copies.get()
            try:
                original = (main_copy / m.file).read_text()
                problem = apply(main_copy, m)
                if problem:
                    row = (m, "error", problem, 0.0)
                else:
                    code, out, secs = run_tests(main_copy, m.tests, args.timeout)
                    if code == 1:
                        failed = [l for l in out.splitlines() if l.startswith(("FAILED", "ERROR"))]
                        row = (m, "caught", failed[0] if failed else "tests failed", secs)
                    elif code == 0:
                        row = (m, "MISSED", "the tests pass with the bug in place", secs)
                    else:
                        row = (m, "error", f"pytest exit {code}: " + " | ".join(out.strip().splitlines()[-3:]), secs)
                (main_copy / m.file).write_text(original)
            finally:
                copies.put(main_copy)
            print(f"{row[1]:7s} {m.name} ({row[3]:.0f} s)", flush=True)
            return row

        start = time.perf_counter()
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            rows = list(pool.map(one, chosen))
        print(f"{len(rows)} mutations in {time.perf_counter() - start:.0f} s, {args.jobs} at a time", flush=True)
    caught = sum(r[1] == "caught" for r in rows)
    lines = [f"Mutation check: {caught} of {len(rows)} mutations caught.", "",
             "| mutation | broken behaviour | file | tests | result | s |", "|-|-|-|-|-|-|"]
    for m, result, detail, secs in rows:
        tests = ", ".join(f"`{t.replace('tests/', '')}`" for t in m.tests)
        shown = result if result == "caught" else f"**{result}**: {detail}"
        lines.append(f"| `{m.name}` | {m.behaviour} | `{m.file}` | {tests} | {shown} | {secs:.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
