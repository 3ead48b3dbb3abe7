#!/usr/bin/env python
"""Mutation check: does the test suite fail when a headline behaviour breaks?

Each mutation below is one small source change that breaks one behaviour the toolkit promises (a dropout site
of the own BERT forward, --compile, DDP loss weighting, an atomic write, resume, a layer mapping, a selection
rule, a parser's labels...). For each, the script copies the working tree (tracked and untracked, not ignored
files) into a temporary folder with ``../shared`` linked beside it, applies the change, runs the tests named for
it with ``pytest -x``, and records:

- caught: the tests failed (exit status 1);
- MISSED: the tests passed with the bug in place;
- error: pytest could not run (collection error, timeout), or the mutation no longer applies because its source
  text is gone or is no longer unique (the code moved on: update the mutation).

Before the mutations it runs the union of their tests on the unchanged copy (``--no-baseline`` skips that): a
mutation counts as caught only against a passing baseline. Prints a markdown table; exit status 0 when every
mutation was caught.

    python scripts/mutation_check.py                 # everything (about half an hour on 2 cores)
    python scripts/mutation_check.py --list          # the mutations and their tests
    python scripts/mutation_check.py --only compile_ignored resume_rng_state

Keep it maintained: a new headline feature adds its mutation here, and a mutation that stops applying is fixed
in the same change that moved the code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
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
             "fine_tune/cli.py", 'lr: float = flag(3e-5, "peak learning rate")', 'lr: float = flag(2e-5, "peak learning rate")',
             ("tests/test_flags.py",)),
    Mutation("no_writer_lock", "a second run writes an experiment a live run is writing",
             "fine_tune/workflows/start.py", '    lock_folder(p.exp.path, "experiment")\n', "",
             ("tests/test_never_lose_a_run.py::test_one_writer_per_experiment",)),
    Mutation("resume_trusts_inputs", "a resume trains on a changed training file",
             "fine_tune/workflows/start.py", "        if changed and not flags.paths.overwrite:\n", "        if False:\n",
             ("tests/test_never_lose_a_run.py::test_resume_refuses_a_changed_training_file",)),
    Mutation("name_not_checked", "an experiment name climbs out of the experiment root",
             "fine_tune/experiment.py", '    return f"{check_name(experiment, flag)}_', '    return f"{experiment}_',
             ("tests/test_never_lose_a_run.py::test_a_name_with_dotdot_and_overwrite_deletes_nothing",)),
    Mutation("damaged_final_counts_as_finished", "a truncated final checkpoint counts as finished",
             "fine_tune/workflows/start.py", "    if not path.is_file():\n        return False\n    try:\n        read_checkpoint(path, mmap=True)",
             "    if not path.is_file():\n        return False\n    try:\n        pass",
             ("tests/test_never_lose_a_run.py::test_a_damaged_final_checkpoint_is_not_finished",)),
    Mutation("logits_teacher_unchecked", "distillation trains on logits of a teacher since re-trained",
             "fine_tune/workflows/offline_distill.py", "    check_teacher_unchanged(meta, p.exp.root, e.dataset)\n", "",
             ("tests/test_never_lose_a_run.py::test_distillation_refuses_logits_of_a_retrained_teacher",)),
    Mutation("legacy_rule_dropped", "a run started before a fidelity fix resumes under the new rule",
             "fine_tune/workflows/online_distill.py", "    method.continue_legacy(start.legacy)\n", "",
             ("tests/test_legacy_resume.py",)),
    Mutation("pkd_cls_summed", "PKD normalized_cls summed over layers and dimensions again",
             "fine_tune/methods/pkd.py", 'cls_reduction: str = "mean"):', 'cls_reduction: str = "sum"):',
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
    Mutation("atomic_submission", "the submission file written in place", "fine_tune/tasks/registry.py",
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
             "fine_tune/workflows/start.py",
             "    if final_whole and (not ready or ready[-1] == total_step):",
             "    if final_whole:", (f"{RESUME}[lad_last_step]",)),
    Mutation("overwrite_leaves_predictions", "--overwrite leaves the old run's eval predictions behind",
             "fine_tune/workflows/start.py", '        if entry.name not in ("config.json", HOLDER_FILE):',
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
             "fine_tune/engine/trainer.py", '            if best is not None and old == best["step"]:',
             "            if False:", (f"{EV}::test_save_total_limit_keeps_the_best_checkpoint_and_the_newest",)),
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
]


def copy_tree(dest: Path) -> Path:
    """The working tree (tracked and untracked files git does not ignore) at ``dest/main``, ../shared beside it."""
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
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
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
        main_copy = copy_tree(Path(tmp))
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, out, secs = run_tests(main_copy, tests, args.timeout * 2)
            print(f"baseline: {len(tests)} test selections on the unchanged copy: exit {code} in {secs:.0f} s",
                  flush=True)
            if code != 0:
                print(out[-6000:])
                print("error: the tests fail without any mutation; fix them first", file=sys.stderr)
                return 1
        rows = []
        for m in chosen:
            original = (main_copy / m.file).read_text()
            problem = apply(main_copy, m)
            if problem:
                rows.append((m, "error", problem, 0.0))
            else:
                code, out, secs = run_tests(main_copy, m.tests, args.timeout)
                if code == 1:
                    failed = [l for l in out.splitlines() if l.startswith(("FAILED", "ERROR"))]
                    rows.append((m, "caught", failed[0] if failed else "tests failed", secs))
                elif code == 0:
                    rows.append((m, "MISSED", "the tests pass with the bug in place", secs))
                else:
                    rows.append((m, "error", f"pytest exit {code}: " + " | ".join(out.strip().splitlines()[-3:]), secs))
            (main_copy / m.file).write_text(original)
            print(f"{rows[-1][1]:7s} {m.name} ({rows[-1][3]:.0f} s)", flush=True)
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
