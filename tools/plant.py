"""Plant one wrong result at a time in a copy of the repository and see whether the tests notice.

    python -m tools.plant                 # every plant; prints KILLED / SURVIVED per plant and the counts
    python -m tools.plant --list          # the plants, without running anything
    python -m tools.plant --only loss-margin-ignored top-k-keeps-newest

Each plant replaces one exact snippet of one file by a wrong version and runs only the tests it names
(pytest -x -q, under nice) in a temporary copy of the working tree; the working tree is never touched.
KILLED: a named test failed. SURVIVED: every named test passed, so nothing catches that wrong result.
A plant whose snippet is not found exactly once stops the script before anything runs, naming the plant:
after a refactor, update the snippet (the wrong result it models has not gone away).
Test paths that do not exist in the copy are dropped, so the same list runs against older commits.
(mutmut or cosmic-ray would generate thousands of mutants, each against a suite of several minutes, on
2 shared cores; a short list of wrong results a person would write costs minutes and names the behaviour.)
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Plant(NamedTuple):
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: test files or node ids, and options
    wrong: str  # the wrong result it models


# The tests that compute the expected figure themselves come first, then the others that might notice: -x stops
# at the first failure. "-m not slow" only where no end-to-end test is named.
UNIT_METRICS = ("tests/test_metrics.py", "tests/test_spec_values.py")
UNIT_DATA = ("tests/test_data.py", "tests/test_tables.py")
UNIT_LOSS = ("tests/test_losses.py",)
UNIT_CALIBRATION = ("tests/test_calibration.py",)
FAST_METRICS, FAST_DATA = UNIT_METRICS + ("-m", "not slow"), UNIT_DATA + ("-m", "not slow")
RUN = "tests/test_run_results.py::test_"
IMAGES, SCORING = "tests/test_images.py", "tests/test_scoring.py"
SEED = RUN + "req_u_004_the_head_starts_from_the_configured_seed_and_adamw_has_the_configured_settings"
SPLIT_SEED = RUN + "the_split_is_the_configured_seed_s"
LOSS = RUN + "spec_4_4_3_training_loss_and_gradient_are_margin_ranking_loss_over_the_cross_tier_pairs"
VAL_LOSS = RUN + "req_s_002_validation_loss_and_accuracy_are_the_spec_s_over_the_validation_pairs"
CALIBRATION = RUN + "calibration_is_fitted_on_validation_scores"
EVAL_SPLIT = RUN + "evaluate_reports_the_split_it_is_asked_for_from_that_split_s_images"
EVAL_CI = RUN + "evaluate_interval_resamples_artists_with_the_configured_seed"
EVAL_WANDB = RUN + "req_u_003_n_004_evaluate_is_tracked_in_its_own_offline_wandb_run"
EVAL_REFUSES = RUN + "evaluate_refuses_a_split_other_than_the_trained_one_and_writes_nothing"
PREDICT = RUN + "predict_tier_hint_and_probability_come_from_the_run_s_calibration"
TOP_K = RUN + "req_o_005_top_k_keeps_the_best_checkpoints_and_the_best_is_the_first_of_equals"
ACCUMULATION = RUN + "req_o_001_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients"
LEAK = RUN + "req_n_001_train_py_refuses_a_split_that_leaks_test_images"
ANSWERS, CORRECTIONS = "tests/test_answers.py::test_", "tests/test_corrections.py::test_"
REVIEW_APP = "tests/test_review_app.py::test_"
BROWSER = REVIEW_APP + "a_teacher_judges_undoes_judges_again_and_corrects_in_a_real_browser"
TIER_SETS_RUN = RUN + "tier_sets_take_their_bands_from_training_and_their_threshold_from_validation_alone"
NOVELTY = ("tests/test_novelty.py",)
NOVELTY_RUN = NOVELTY[0] + "::test_an_unlike_drawing_is_flagged_by_the_checkpoint_and_the_export_and_predict_warns"
TIER_SETS, RELIABILITY = ("tests/test_tier_sets.py",), ("tests/test_reliability_measures.py",)
COMPARISONS = "tests/test_comparisons.py::test_"
COMPARISON_LOSS = COMPARISONS + "comparison_loss_with_ties_and_rater_weights_against_a_hand_computation"
COMPARISON_LEAK = COMPARISONS + "req_n_001_a_comparison_with_a_test_image_never_reaches_training_or_validation"
COMPARISON_EVAL = COMPARISONS + "comparison_accuracy_per_rater_within_tier_and_rater_agreement_against_hand_counts"
CACHE = RUN + "feature_cache_is_not_reused_after_new_backbone_weights_of_the_same_shape"
EVALUATE = ("tests/test_evaluate.py::test_evaluate_end_to_end",)
TRAIN = ("tests/test_train.py::test_req_e_005_n_005_best_checkpoint_is_saved_from_a_validated_best_epoch",
         "tests/test_train.py::test_req_o_001_gradient_accumulation_steps_the_optimizer_every_k_batches")
PROCEDURE = ("tests/test_model.py::test_training_stops_after_patience_epochs_without_a_better_val_loss_and_the_best_is_"
             "the_first_highest", "tests/test_model.py::test_top_k_keeps_the_best_and_an_earlier_epoch_wins_a_tie")
LAYOUT = "tests/test_layout.py"
TIER_UNIT = ("tests/test_tier_model.py", "-m", "not slow")  # the tier model's unit tests
TIER_END_TO_END = "tests/test_tier_model.py::test_a_tier_model_is_evaluated_exported_and_gives_the_same_p_tier_from_"\
    "export_and_checkpoint"
PICKLE = "tests/test_runs.py::test_resume_never_runs_code_from_a_pickle_in_the_run_folder"
PROVENANCE = "tests/test_provenance.py::test_"
RUNS = "tests/test_runs.py::test_"
FOREIGN_HEAD = (PROVENANCE + "a_head_trained_in_another_run_is_refused_naming_both_runs",
                RUNS + "evaluate_refuses_a_checkpoint_trained_by_another_run")
CARD_MODELS = ("tests/test_card.py::test_the_card_shows_the_best_checkpoint_s_figures_and_names_the_ensemble_and_"
               "the_export")
STALE = (PROVENANCE + "what_describes_a_checkpoint_the_run_no_longer_holds_is_removed_and_nothing_else",
         RUNS + "resume_to_the_end_removes_the_partial_run_s_results_and_writes_a_missing_card")
USER_FOLDER = RUNS + "a_fresh_run_into_a_folder_of_the_user_s_is_refused_and_the_flag_deletes_none_of_it"
STARTUP = "tests/test_startup.py::test_help_loads_no_heavy_library"
RUN_FOLDER = ("tests/test_config.py", "-m", "not slow")
PROVIDER = ("tests/test_predict.py::test_the_execution_provider_and_the_fp16_file_are_chosen_and_a_missing_provider_"
            "is_one_line")
SHARING = "tests/test_sharing.py::test_"
MESSAGES_CONFIG = ("tests/test_config.py::test_an_unknown_flag_gets_our_name_for_it",)
SOURCES = "tests/test_sources.py::test_a_saved_dataset_a_parquet_file_and_a_jsonl_folder_give_the_folder_s_table"
CV = "tests/test_crossval.py::test_"
REVIEW = "tests/test_review.py::test_"
AUDIT = "tests/test_label_audit.py::test_"
CELL = CV + "a_cell_trains_on_the_other_folds_stops_on_the_next_fold_and_scores_only_the_held_out_one"
CELL_HEAD = CV + "a_cell_s_head_is_the_best_epoch_of_train_py_s_own_procedure"
SWEEP = CV + "every_cell_of_a_sweep_trains_its_own_setting_on_its_own_feature_kind"
CV_REPORT = CV + "the_report_is_the_mean_and_sample_sd_over_folds_and_the_best_is_chosen_by_accuracy"
CV_SE = CV + "within_one_standard_error_is_sd_over_the_square_root_of_the_folds"
CV_DATA = CV + "a_cell_s_data_manifest_changes_with_a_tier_an_artist_or_an_image_and_not_with_row_order"
LOSS_SETTING = "tests/test_model.py::test_the_training_and_validation_losses_are_those_of_the_loss_setting"
PARITY = ("tests/test_export_onnx.py::test_parity_passes_within_the_documented_tolerance_at_batch_1_and_at_batch_n_"
          "and_fails_above_it")
TOP_N = SCORING + "::test_top_n_prints_the_n_best_and_the_n_worst_in_score_order"
COMPARE_HINT = SCORING + "::test_compare_gives_each_image_the_hint_of_its_own_score"
PIL_IMAGE = SCORING + "::test_a_pil_image_scores_as_its_file_does"
HEATMAP = ("tests/test_evaluate.py::test_tier_pair_heatmap_puts_each_pair_in_the_row_of_its_higher_tier_and_the_"
           "column_of_its_lower")
CHECKPOINT = ("tests/test_runs.py::test_checkpoint_names_the_head_that_is_read_and_the_run_s_best_is_the_default",
              "tests/test_evaluate.py::test_checkpoint_is_the_head_evaluate_reads")
CARD_DETAILS = "tests/test_card.py::test_the_details_row_is_the_evaluated_split_s"
MANIFEST = "tests/test_runs.py::test_the_data_change_list_and_the_manifest_hash_see_a_changed_tier_or_artist"
CHUNK_CHECKSUM = ("tests/test_features.py::test_a_chunk_changed_in_its_hashes_or_either_feature_column_fails_its_"
                  "checksum")
PRECISION = "tests/test_features.py::test_features_of_another_precision_are_never_read_for_this_one"
STAT_TIMES = "tests/test_files.py::test_a_value_is_forgotten_when_its_file_is_rewritten_in_place_with_the_same_size"
ODD_MARGIN = IMAGES + "::test_an_odd_margin_leaves_its_extra_pixel_after_the_picture_as_model_json_states"
ARTIST_NAMES = ("tests/test_data.py::test_artist_names_differing_in_case_or_runs_of_spaces_are_one_artist_and_a_"
                "moved_space_is_another")

PLANTS = [
    # ---- what evaluation reports
    Plant("eval-report-of-another-split", "evaluate.py", "**split_report(scores[cfg.split], rows,",
          '**split_report(scores["test"], frames[2],', (EVAL_SPLIT,) + EVALUATE,
          "evaluate.py --split val reports the test split's figures under the name val"),
    Plant("eval-scores-csv-of-another-split", "evaluate.py", "split_scores[name] = scores[cfg.split]",
          'split_scores[name] = scores["test"]', (EVAL_SPLIT,) + EVALUATE,
          "scores_val.csv holds the test split's scores"),
    Plant("eval-figures-of-another-split", "evaluate.py", 'f"score_by_tier_{tag}.png"',
          '"score_by_tier_test.png"', (EVAL_SPLIT,) + EVALUATE,
          "the score-by-tier figure of --split val is written as test's"),
    Plant("eval-split-check-not-called", "evaluate.py",
          'check_same_data(cfg.output_dir, table, comparisons_sha256=comparisons_digest(cfg.data_dir))', "None",
          (EVAL_REFUSES,) + EVALUATE, "evaluate.py scores a split other than the one the head was trained with"),
    Plant("eval-comparisons-unchecked", "evaluate.py", "comparisons_sha256=comparisons_digest(cfg.data_dir))",
          "comparisons_sha256=None)", EVALUATE,
          "evaluate.py reports test comparisons a teacher added after training as the run's"),
    Plant("eval-gate-test-0.55", "pipeline/metrics.py", '"test": (">=", 0.60)', '"test": (">=", 0.55)',
          ("tests/test_spec_values.py",) + EVALUATE, "the test gate is not the spec's 0.60"),
    Plant("eval-gate-train-0.85", "pipeline/metrics.py", '"train": ("<=", 0.80)', '"train": ("<=", 0.85)',
          ("tests/test_spec_values.py",) + EVALUATE, "the over-fitting gate is not the spec's 0.80"),
    Plant("eval-gate-strict", "pipeline/metrics.py", "accuracy_by_split[split] >= bound if",
          "accuracy_by_split[split] > bound if", ("tests/test_spec_values.py",) + EVALUATE,
          "an accuracy exactly at the gate fails it"),
    Plant("eval-not-tracked", "evaluate.py", 'start_tracking(accelerator, cfg, job_type="evaluate")', "None",
          (EVAL_WANDB,) + EVALUATE, "evaluate.py runs without a wandb run"),
    Plant("eval-bootstrap-seed-not-configured", "evaluate.py", "resamples=cfg.bootstrap, seed=cfg.seed,\n",
          "resamples=cfg.bootstrap, seed=0,\n", (EVAL_CI,) + EVALUATE, "the interval ignores --seed"),
    Plant("ensemble-one-member", "evaluate.py", "for m in members]} | models", "for m in members[:1]]} | models",
          EVALUATE, "the ensemble scores with one member"),
    Plant("eval-bootstrap-of-images", "evaluate.py", 'np.asarray(rows["artist"], dtype=object)\n    accuracy, pairs',
          'np.asarray(rows["image_id"], dtype=object)\n    accuracy, pairs', (EVAL_CI,) + EVALUATE,
          "evaluate.py resamples images, not artists"),
    Plant("eval-ensemble-last-member", "evaluate.py", "for head in heads]).mean(dim=0).numpy()",
          "for head in heads])[-1].numpy()",
          ("tests/test_evaluate.py::test_ensemble_score_is_the_mean_of_its_members",) + EVALUATE,
          "the ensemble is its last member"),
    # ---- the leak guard and the split
    Plant("train-no-leak-guard-train", "train.py", 'for name in ("train", "val"):  # guards',
          'for name in ("val",):  # guards', (LEAK,) + TRAIN,
          "train.py trains without the test-leak guard on its training rows"),
    Plant("train-no-leak-guard-val", "train.py", 'for name in ("train", "val"):  # guards',
          'for name in ("train",):  # guards', (LEAK,) + TRAIN,
          "train.py validates without the test-leak guard on its validation rows"),
    Plant("guard-ignores-artists", "data.py", 'shared = set(rows["artist"]) & set(test["artist"])', "shared = set()",
          FAST_DATA, "a test artist may reach training"),
    Plant("guard-ignores-copies", "data.py", 'copies = rows["sha256"].isin(set(test["sha256"])) & ~inside',
          'copies = rows["sha256"].isin(set()) & ~inside', FAST_DATA, "a copy of a test image may reach training"),
    Plant("split-seed-fixed", "pipeline/tables.py", "shuffle=True, random_state=seed)",
          "shuffle=True, random_state=42)", UNIT_DATA + (SPLIT_SEED,), "the split ignores the configured seed"),
    Plant("split-depends-on-row-order", "pipeline/tables.py", "fold_of[order[held]] = fold", "fold_of[held] = fold",
          FAST_DATA, "folds assigned to the wrong rows"),
    Plant("split-last-best-choice", "data.py", "if cover > best_cover:", "if cover >= best_cover:", FAST_DATA,
          "another test/val fold choice than documented"),
    # ---- pairs and the loss
    Plant("tiers-a-b-inverted", "pipeline/tables.py", 'TIER_RANK = {"S": 3, "A": 2, "B": 1, "C": 0}',
          'TIER_RANK = {"S": 3, "A": 1, "B": 2, "C": 0}', UNIT_DATA + (LOSS,) + TRAIN, "A ranks below B"),
    Plant("pairs-both-orders", "pipeline/tables.py", "& (np.arange(i0, i1)[:, None] < np.arange(n)[None, :])",
          "& (np.arange(i0, i1)[:, None] != np.arange(n)[None, :])", FAST_DATA, "every pair counted twice"),
    Plant("pairs-label-flipped", "pipeline/tables.py", "label = np.where(ranks[a] > ranks[b], 1, -1)",
          "label = np.where(ranks[a] < ranks[b], 1, -1)", UNIT_DATA + (LOSS,) + TRAIN, "pair labels inverted"),
    Plant("loss-same-tier-pairs", "pipeline/losses.py", "higher = ranks[:, None] > ranks[None, :]",
          "higher = ranks[:, None] >= ranks[None, :]", UNIT_LOSS + (LOSS,) + TRAIN,
          "the training loss includes same-tier pairs"),
    Plant("loss-margin-ignored", "pipeline/losses.py", "pair_loss_terms(scores[better] - scores[worse], margin, loss)",
          "pair_loss_terms(scores[better] - scores[worse], 1.0, loss)", UNIT_LOSS + (LOSS,) + TRAIN,
          "the training loss ignores the configured margin"),
    Plant("train-margin-ignored", "model.py", "batch_size=cfg.batch_size, margin=cfg.margin,",
          "batch_size=cfg.batch_size, margin=1.0,", (LOSS,) + TRAIN, "training ignores --margin"),
    Plant("loss-better-worse-swapped", "pipeline/losses.py",
          "pair_loss_terms(scores[better] - scores[worse], margin, loss)",
          "pair_loss_terms(scores[worse] - scores[better], margin, loss)", UNIT_LOSS + (LOSS,) + TRAIN,
          "the training loss pushes the worse image up"),
    Plant("val-loss-same-tier", "pipeline/losses.py", "higher = ranks[start:start + block, None] > ranks[None, :]",
          "higher = ranks[start:start + block, None] >= ranks[None, :]", UNIT_LOSS + (VAL_LOSS,) + TRAIN,
          "the validation loss includes same-tier pairs"),
    Plant("val-loss-sign", "pipeline/losses.py", "torch.clamp(margin - gap, min=0)",
          "torch.clamp(margin + gap, min=0)",
          UNIT_LOSS + (VAL_LOSS,) + TRAIN, "the validation loss rewards the wrong order"),
    # ---- the training procedure
    Plant("train-seed-not-configured", "model.py", "set_seed(cfg.seed)  # the head's", "set_seed(42)  # the head's",
          (SEED,) + TRAIN, "the head starts from seed 42 whatever --seed says"),
    Plant("accumulation-zeroed-every-micro-batch", "model.py", "            accelerator.backward(batch_loss)\n",
          "            head.zero_grad()\n            accelerator.backward(batch_loss)\n", (ACCUMULATION,) + TRAIN,
          "gradient accumulation steps every k batches with the last micro-batch's gradient only"),
    Plant("top-k-keeps-newest", "model.py", "key=lambda t: (-t[0], t[1]))", "key=lambda t: -t[1])",
          PROCEDURE[1:] + (TOP_K,) + TRAIN, "top-k keeps the newest checkpoints instead of the best"),
    Plant("train-loss-average-off-by-one", "model.py", "progress.epoch_loss_sum / max(1, progress.batches_done)",
          "progress.epoch_loss_sum / max(1, progress.batches_done + 1)", (LOSS,) + TRAIN,
          "logged train loss too small"),
    Plant("train-weight-decay-dropped", "model.py", "weight_decay=cfg.weight_decay)", "weight_decay=0.0)",
          (SEED,) + TRAIN, "AdamW without the configured weight decay"),
    Plant("train-best-on-equal", "model.py", "if val_acc > progress.best_val_acc:",
          "if val_acc >= progress.best_val_acc:", PROCEDURE + (TOP_K,) + TRAIN,
          "the best checkpoint is the latest of equally good epochs"),
    Plant("train-patience-off-by-one", "model.py", "if progress.stale_epochs >= cfg.patience:",
          "if progress.stale_epochs > cfg.patience:", PROCEDURE, "early stopping waits one epoch too many"),
    Plant("train-min-lr-inverted", "model.py", "if next_lr < cfg.min_lr:", "if next_lr > cfg.min_lr:",
          ("tests/test_model.py::test_training_stops_when_the_next_learning_rate_falls_below_min_lr",),
          "training stops while the learning rate is still above min_lr"),
    Plant("train-final-metrics-of-another-checkpoint", "train.py",
          "best, best_meta = load_head(runs.best_checkpoint(out),",
          "best, best_meta = load_head(sorted(runs.top_checkpoints(out).iterdir())[-1],", (TOP_K,) + TRAIN,
          "final metrics and calibration from the latest kept checkpoint, not the best"),
    Plant("train-calibration-on-train", "train.py", 'calibration = fit_calibration(scores["val"], val_tiers)',
          'calibration = fit_calibration(scores["train"], tiers_of(frames[0]))', (CALIBRATION,) + TRAIN,
          "the calibration is fitted on training images"),
    # ---- cross-validation: the cells, the sweep and the report
    Plant("crossval-stop-fold-also-trained", "crossval.py", '("fit", (fold_of != held) & (fold_of != stopping))',
          '("fit", fold_of != held)', (CELL,), "the fold that stops training early is also trained on"),
    Plant("crossval-stop-fold-also-scored", "crossval.py", '("held", fold_of == held))}',
          '("held", (fold_of == held) | (fold_of == stopping)))}', (CELL,),
          "the fold that stopped training is scored with the held-out one"),
    Plant("crossval-last-epoch-head", "model.py", 'head.load_state_dict(best["state"])', "best.clear()",
          (CELL_HEAD,), "a cell scores the last epoch's head instead of the best"),
    Plant("crossval-setting-ignored", "crossval.py",
          "label, setting_cfg = selection.setting_label(setting), replace(cfg, **setting)",
          "label, setting_cfg = selection.setting_label(setting), cfg", (SWEEP,),
          "every setting of the grid trains the config as given"),
    Plant("crossval-feature-of-the-config", "crossval.py", "features=features[setting_cfg.feature]",
          "features=features[cfg.feature]", (SWEEP,),
          "a grid value of feature trains on the config's features, silently"),
    Plant("crossval-sd-population", "pipeline/selection.py", '"accuracy_sd": accuracy.std(ddof=1)',
          '"accuracy_sd": accuracy.std()', (CV_REPORT,), "the sd over folds divides by n, not n - 1"),
    Plant("crossval-tau-sd-population", "pipeline/selection.py", '"kendall_tau_sd": tau.std(ddof=1)',
          '"kendall_tau_sd": tau.std()', (CV_REPORT,), "the sd of Kendall tau over folds divides by n"),
    Plant("crossval-se-without-root", "pipeline/selection.py",
          'table.loc[best, "accuracy_sd"] / np.sqrt(table.loc[best, "folds"])',
          'table.loc[best, "accuracy_sd"] / table.loc[best, "folds"]', (CV_SE,),
          "the standard error is sd / n, not sd / sqrt(n)"),
    Plant("crossval-best-by-kendall", "pipeline/selection.py", 'best = int(table["accuracy_mean"].to_numpy().argmax())',
          'best = int(table["kendall_tau_mean"].to_numpy().argmax())', (CV_REPORT,),
          "the best setting is chosen by Kendall tau, not the documented accuracy"),
    Plant("crossval-fingerprint-blind-to-tier", "pipeline/runs.py",
          "listed = rows[list(MANIFEST_COLUMNS)]", 'listed = rows[[c for c in MANIFEST_COLUMNS if c != "tier"]]',
          (CV_DATA,),
          "a re-tiered image reuses the cells computed with its old tier"),
    Plant("crossval-fingerprint-blind-to-artist", "pipeline/runs.py",
          "listed = rows[list(MANIFEST_COLUMNS)]", 'listed = rows[[c for c in MANIFEST_COLUMNS if c != "artist"]]',
          (CV_DATA,),
          "an image moved to another artist reuses the cells of the old folds"),
    Plant("kendall-is-spearman", "pipeline/metrics.py", "return float(kendalltau(scores, ranks).statistic)",
          "return float(spearmanr(scores, ranks).statistic)", FAST_METRICS + (CELL,),
          "the Kendall tau reported is Spearman's rho"),
    # ---- the loss setting
    Plant("train-loss-ignores-logistic", "model.py", "batch_size=cfg.batch_size, margin=cfg.margin, loss=cfg.loss,",
          'batch_size=cfg.batch_size, margin=cfg.margin, loss="margin",', (LOSS_SETTING,),
          "training ignores loss: logistic"),
    Plant("val-loss-ignores-logistic", "model.py", "self.unwrapped_head().thresholds(), loss=cfg.loss,",
          'self.unwrapped_head().thresholds(), loss="margin",', (LOSS_SETTING,),
          "the validation loss (which stops training) is the margin loss whatever loss says"),
    # ---- export and predict
    Plant("export-fp16-tolerance-tenfold", "pipeline/export.py", '"fp16": (2e-2, 2e-3)}', '"fp16": (2e-1, 2e-2)}',
          (PARITY,), "an fp16 export ten times further from PyTorch than documented passes its check"),
    Plant("export-parity-batch-1-only", "pipeline/export.py",
          '"ok": all(r["max_abs_diff"] <= tolerance for r in batches.values())',
          '"ok": batches[1]["max_abs_diff"] <= tolerance', (PARITY,),
          "an export wrong at batch N passes because batch 1 is right"),
    Plant("predict-top-best-only", "predict.py", "else rows[:top] + rows[-top:]",
          "else rows[:top]", (TOP_N,), "--top N shows the N best and not the N worst"),
    Plant("compare-hint-of-b-for-a", "predict.py", '(("A", path_a, result.score_a, result.tier_hint_a,',
          '(("A", path_a, result.score_a, result.tier_hint_b,', (COMPARE_HINT,),
          "--compare prints image B's tier hint beside A"),
    Plant("api-compare-hint-of-b-for-a", "artrank.py", "tier_hint_a=self.tier_hint(score_a)",
          "tier_hint_a=self.tier_hint(score_b)", (COMPARE_HINT,), "Ranker.compare gives A the tier hint of B"),
    Plant("pil-image-not-rgb", "pipeline/scoring.py", "letterbox(to_rgb(image), scorer.image_size)",
          "letterbox(image, scorer.image_size)", (PIL_IMAGE,),
          "a PIL image is scored without its conversion to RGB (palette indices, alpha as a channel)"),
    # ---- evaluation and the run's identity
    Plant("heatmap-transposed", "pipeline/figures.py", "grid[i, j] = accuracy", "grid[j, i] = accuracy", (HEATMAP,),
          "the tier-pair heatmap puts S-C's accuracy in the cell labelled B-A"),
    Plant("checkpoint-ignored", "pipeline/runs.py",
          "return Path(cfg.checkpoint) if cfg.checkpoint else best_checkpoint(cfg.output_dir)",
          "return best_checkpoint(cfg.output_dir)", CHECKPOINT, "--checkpoint is ignored: the best head is read"),
    Plant("card-details-of-the-test-split", "pipeline/card.py", 'if report and split == report["split"]:',
          'if report and split == "test":', (CARD_DETAILS,),
          "the card's details (images, pairs, interval) of --split val are printed on the test row"),
    Plant("manifest-changes-blind-to-artist", "pipeline/runs.py", '("artist", "by another artist"), ', "",
          (MANIFEST,), "an image moved to another artist is not named as a change of the data"),
    Plant("manifest-changes-blind-to-tier", "pipeline/runs.py", '("tier", "with another tier"),', "",
          (MANIFEST,), "a re-tiered image is not named as a change of the data"),
    Plant("manifest-hash-blind-to-tier-and-artist", "pipeline/runs.py",
          'listed = rows[list(MANIFEST_COLUMNS)].sort_values', 'listed = rows[["image_id", "file_name", "sha256", '
          '"split"]].sort_values', (MANIFEST,), "the manifest hash of run.json is blind to tiers and artists"),
    # ---- inputs and caches
    Plant("canvas-offset-rounded-up", "pipeline/images.py", "top, left = (side - height) // 2, (side - width) // 2",
          "top, left = (side - height + 1) // 2, (side - width + 1) // 2", (ODD_MARGIN, IMAGES),
          "an odd margin's extra pixel goes before the picture: one pixel off what model.json states"),
    Plant("chunk-checksum-skips-mean-patch", "pipeline/features.py", "    digest.update(mean_patches.tobytes())\n",
          "", (CHUNK_CHECKSUM,), "a damaged mean-patch column passes the chunk's checksum"),
    Plant("image-checks-keyed-without-times", "pipeline/files.py",
          'f"{self.version} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"',
          'f"{self.version} {st.st_size} {st.st_ino}"', (STAT_TIMES,),
          "an image rewritten in place at the same size keeps its old verdict and hash"),
    Plant("artist-key-drops-spaces", "pipeline/rows.py", 'return " ".join(unicodedata.normalize("NFKC", name)',
          'return "".join(unicodedata.normalize("NFKC", name)', (ARTIST_NAMES,),
          "'Anna Lee' and 'Ann Alee' are merged into one artist (their works then share a split)"),
    Plant("feature-cache-blind-to-precision", "pipeline/features.py",
          "preprocessing=PREPROCESSING_VERSION, precision=precision)", "preprocessing=PREPROCESSING_VERSION)",
          (PRECISION,), "fp16 GPU features are reused by an fp32 run"),
    # ---- features, backbones, calibration, predict
    Plant("cache-ignores-weights", "pipeline/backbones.py",
          'for path in sorted(directory.glob("*.json")) + weights:',
          'for path in sorted(directory.glob("*.json")):', (CACHE, "tests/test_features.py"),
          "new backbone weights of the same shape reuse the old cached features"),
    Plant("tier-hint-ignores-calibration", "pipeline/calibration.py", 'if score >= cut["threshold"]', "if score >= 0.0",
          (PREDICT,), "the tier hint ignores the calibration's cut points"),
    Plant("compare-ignores-slope", "pipeline/calibration.py",
          'np.tanh(0.5 * calibration["slope"] * (np.asarray(score_a, np.float64) - score_b))',
          "np.tanh(0.5 * (np.asarray(score_a, np.float64) - score_b))", (PREDICT,),
          "P(A better) ignores the fitted slope"),
    Plant("calibration-cut-not-midpoint", "pipeline/calibration.py",
          "thresholds = [(ordered_scores[p - 1] + ordered_scores[p]) / 2 for p in positions]",
          "thresholds = [ordered_scores[p] for p in positions]", UNIT_CALIBRATION + (CALIBRATION,),
          "tier cut points on a validation score, not halfway between neighbours"),
    Plant("calibration-slope-sign", "pipeline/calibration.py", "y = np.concatenate([label > 0, label < 0])",
          "y = np.concatenate([label < 0, label > 0])", UNIT_CALIBRATION + (PREDICT,), "P(A better) inverted"),
    Plant("predict-skips-preprocessing-check", "pipeline/scoring.py",
          "    if (prep[\"version\"], tuple(prep[\"mean\"])",
          "    if False and (prep[\"version\"], tuple(prep[\"mean\"])",
          ("tests/test_predict.py::test_bad_model_is_a_one_line_error",),
          "predict.py scores with a model.json whose preprocessing differs"),
    Plant("predict-scores-out-of-order", "pipeline/scoring.py", "decoding.popleft().result()",
          "decoding.pop().result()", (SCORING,), "predict's prefetch hands the scores to the wrong images"),
    Plant("canvas-keeps-stale-margins", "pipeline/images.py",
          "    out[:, top:top + height, :left] = out[:, top:top + height, left + width:] = 0\n", "", (IMAGES,),
          "a reused batch row keeps the last picture beside a narrower one"),
    Plant("letterbox-bilinear", "pipeline/images.py", 'mode="bicubic", antialias=True)[0]',
          'mode="bilinear", antialias=True)[0]', (IMAGES,), "the letterbox is not the bicubic model.json states"),
    # ---- the metrics
    Plant("bootstrap-resamples-images", "pipeline/metrics.py",
          "names, artist_of = np.unique(np.asarray(artists), return_inverse=True)",
          "names = artist_of = np.arange(len(np.asarray(artists)))", FAST_METRICS,
          "the interval resamples images, not artists"),
    Plant("bootstrap-50-percent", "pipeline/metrics.py", "seed: int, level: float = 0.95,",
          "seed: int, level: float = 0.5,", FAST_METRICS,
          "a 50% interval labelled 95%"),
    Plant("metrics-ties-right", "pipeline/metrics.py", 'side="left")', 'side="right")', FAST_METRICS,
          "a tie across tiers counts as correct"),
    Plant("metrics-total-plus", "pipeline/metrics.py",
          "total = weights[:, upper].sum(axis=1) * weights[:, lower].sum(axis=1)",
          "total = weights[:, upper].sum(axis=1) + weights[:, lower].sum(axis=1)", FAST_METRICS,
          "pair count added instead of multiplied"),
    Plant("metrics-unsorted-lower", "pipeline/metrics.py", 'lower = lower[np.argsort(scores[lower], kind="stable")]',
          "lower = lower", FAST_METRICS, "searchsorted on unsorted scores"),
    Plant("bootstrap-quantiles-off", "pipeline/metrics.py", "[(1 - level) / 2, (1 + level) / 2]",
          "[(1 - level), level]", FAST_METRICS, "interval quantiles off by half"),
    Plant("accuracy-off-by-one", "pipeline/metrics.py", "return correct / pairs, pairs",
          "return correct / (pairs + 1), pairs", FAST_METRICS, "accuracy divides by one pair too many"),
    # ---- the config keys, the shape, the data sources
    Plant("config-bool-for-int", "pipeline/config.py", "isinstance(value, expected) and not isinstance(value, bool)",
          "isinstance(value, expected)", ("tests/test_config.py", "tests/test_spec_values.py"),
          "a bool is accepted for an int key (true = 1 epoch)"),
    Plant("config-lr-runtime", "pipeline/config.py", 'lr: float = key(1e-4, "AdamW learning rate", TRAINING,',
          'lr: float = key(1e-4, "AdamW learning rate", RUNTIME,',
          ("tests/test_runs.py::test_resume_with_other_settings_is_refused_naming_each_key_before_any_work",),
          "a resume with another learning rate is accepted as the same run"),
    Plant("grid-sweeps-the-image-size", "pipeline/config.py",
          'image_size: int = key(768, "long side of the letterboxed image", FEATURES, RUNS_BACKBONE,',
          'image_size: int = key(768, "long side of the letterboxed image", FEATURES, RUNS_BACKBONE, searchable=True,',
          ("tests/test_config.py", "tests/test_selection.py"),
          "cross-validation sweeps a key that changes the features"),
    Plant("grid-values-unchecked", "pipeline/selection.py", "[check_value(key, value, source) for value in values]",
          "[value for value in values]", ("tests/test_selection.py",),
          "a grid value no config file would pass is swept"),
    Plant("handler-hides-bugs", "pipeline/cli.py", "    except ArtrankError as err:", "    except ValueError as err:",
          ("tests/test_cli.py", LAYOUT), "a bug inside the library reads like a user's mistake, without its traceback"),
    Plant("library-imports-upward", "pipeline/tables.py", "import warnings\n",
          "import warnings\n\nimport data  # noqa: F401\n", (LAYOUT,),
          "the library imports data.py from the top level"),
    Plant("dataset-paths-from-the-working-folder", "pipeline/sources.py",
          'base = Path(data_dir) if kind == "saved" else Path(data_dir).parent', "base = Path.cwd()", (SOURCES,),
          "a dataset's relative image paths read from wherever the command runs, not beside the dataset"),
    Plant("dataset-class-labels-reversed", "pipeline/sources.py", "tier = tier_names[tier] if",
          "tier = tier_names[::-1][tier] if", (SOURCES,), "a dataset's tier class labels read back to front"),
    # ---- provenance: what is loaded from a run folder is what this code wrote, for this run
    Plant("state-pickle-unchecked", "pipeline/state.py", "        if unsafe:\n", "        if False:\n", (PICKLE,),
          "a saved state whose RNG pickle calls code is resumed (Accelerate then skips the RNG without a word)"),
    Plant("head-of-another-run", "model.py", "expected=run, format_version=HEAD_FORMAT",
          "expected={}, format_version=HEAD_FORMAT", FOREIGN_HEAD,
          "evaluate.py --checkpoint scores a head another run trained, on images it trained on"),
    Plant("calibration-of-another-checkpoint", "pipeline/calibration.py",
          'if calibration is None or calibration[MADE_FROM].get("checkpoints") != made_from(output_dir, checkpoint)[\n'
          '            "checkpoints"]:', "if calibration is None:",
          (PROVENANCE + "a_calibration_serves_only_the_checkpoint_it_was_fitted_on_and_only_its_run",
           "tests/test_export_onnx.py::test_an_export_of_another_checkpoint_ships_no_calibration_of_the_best_and_"
           "clears_a_killed_staging"),
          "an export of another checkpoint ships the best checkpoint's calibration and tier-hint agreement"),
    Plant("card-shows-any-report", "pipeline/card.py", "best and (r := verified(out / name, best)) and not",
          "(r := read_json(out / name)) and not", (CARD_MODELS,),
          "the card shows an evaluation of another checkpoint as the best checkpoint's"),
    Plant("stale-results-kept", "pipeline/provenance.py",
          "        if stale(read_json_or_none(report), run_id, checkpoints):", "        if False:", STALE,
          "after --resume to the end the card and eval_test.json show the partial run"),
    Plant("card-not-repaired", "train.py", 'not (out / "README.md").is_file():  # killed before the card',
          "False:", (STALE[1],), "a kill between final_metrics.json and the card leaves a run without a card"),
    Plant("extraction-hashes-nothing", "pipeline/features.py", "patch_size=extractor.patch_size, hashes=hashes)",
          "patch_size=extractor.patch_size, hashes=None)",
          ("tests/test_features.py::test_an_image_rewritten_after_its_check_is_refused_and_its_new_picture_never_"
           "filed_under_the_old_hash",),
          "an image rewritten during extraction has the new picture's features filed under the old content's hash"),
    Plant("cache-width-unchecked", "pipeline/features.py", "if width is not None and cls_tokens.shape[1] != width:",
          "if False:", ("tests/test_features.py::test_damaged_cache_is_detected_and_rebuilt",),
          "a sound feature chunk of another width is used as the backbone's features"),
    Plant("pairs-split-not-checked", "train.py",
          "if record or (not cfg.overwrite_output_dir and runs.read_record(out)):",
          "if record:", (RUNS + "make_pairs_then_a_metadata_change_then_train_is_refused",),
          "train.py re-splits silently after make_pairs.py, and pairs/ labels trained images as test"),
    Plant("artist-first-spelling", "pipeline/rows.py", '.groupby(keys, sort=False)["artist"].agg(canonical_spelling)',
          '.groupby(keys, sort=False)["artist"].first()',
          ("tests/test_data.py::test_the_split_and_the_artist_names_do_not_depend_on_row_order_or_on_which_spelling_"
           "comes_first",), "re-sorting metadata.csv renames an artist and may move it to another split"),
    Plant("user-folder-taken", "pipeline/runs.py", "if record is None and out.is_dir() and (theirs :=",
          "if False and (theirs :=", (USER_FOLDER,),
          "a fresh run writes over the user's own files in a folder with no run"),
    Plant("overwrite-deletes-the-user-s", "pipeline/runs.py",
          "for name in sorted(set(owned) - {RUN_RECORD}) + [RUN_RECORD]:",
          "for name in sorted(p.name for p in out.iterdir() if any(fnmatch.fnmatch(p.name, q) for q in RUN_FILES)):",
          (RUNS + "the_run_lists_the_files_it_wrote_and_overwrite_removes_those_alone", USER_FOLDER),
          "--overwrite_output_dir deletes a user's folder whose name the run also uses"),
    Plant("overwrite-by-name", "pipeline/runs.py", "if before.get(name) != inode\n", "if True\n",
          (RUNS + "the_run_lists_the_files_it_wrote_and_overwrite_removes_those_alone",),
          "--overwrite_output_dir deletes a user's file in the run folder whose name matches a run file's"),
    Plant("killed-command-s-files-unlisted", "pipeline/runs.py",
          "        if (killed := started_with(self.file.read())) is not None:", "        if False:",
          (RUNS + "files_a_killed_command_wrote_are_listed_by_the_next_command",),
          "the files a killed train.py wrote are never listed, so --overwrite_output_dir leaves its state behind"),
    Plant("overwrite-of-an-unlisted-record", "pipeline/runs.py", "    if (owned := owned_files(out)) is None:",
          "    if (owned := owned_files(out) or []) is None:",
          (RUNS + "overwrite_of_a_record_that_lists_no_files_is_refused_and_deletes_nothing",),
          "--overwrite_output_dir of an older version's run removes run.json and leaves the rest of that run"),
    Plant("export-data-unchecked", "export_onnx.py",
          "            check_same_data(cfg.output_dir, table, comparisons_sha256=None)", "            pass",
          (RUNS + "resume_after_new_works_is_refused_naming_what_changed",),
          "export_onnx.py exports a run whose data changed since training (evaluate.py refuses the same data)"),
    Plant("export-staging-left", "pipeline/export.py", 'for killed in out.glob(".export-*"):', "for killed in []:",
          ("tests/test_export_onnx.py::test_an_export_of_another_checkpoint_ships_no_calibration_of_the_best_and_"
           "clears_a_killed_staging",), "a killed export's staging folder (gigabytes for ViT-L) stays for ever"),
    Plant("reader-builds-a-backbone", "artrank.py", 'output_dir=str(path), random_backbone="")',
          "output_dir=str(path))",
          ("tests/test_artrank.py::test_loading_a_run_from_another_folder_never_builds_a_backbone_there",),
          "artrank.load(RUN, backend='torch') builds a random backbone into the caller's folder"),
    Plant("graph-input-unchecked", "pipeline/scoring.py", "    check_graph(session, description, path, meta_path)\n",
          "",
          ("tests/test_predict.py::test_bad_model_is_a_one_line_error",),
          "a model.json whose preprocessing size disagrees with the graph's input scores other pixels"),
    Plant("cells-not-keyed-by-preprocessing", "pipeline/selection.py",
          "features=features, preprocessing=PREPROCESSING_VERSION)", "features=features)", ("tests/test_selection.py",),
          "crossval.py reuses cells computed with another preprocessing"),
    Plant("cell-made-from-unchecked", "pipeline/selection.py",
          'return verified(directory / f"{cell_key(origin)}.json", origin)',
          'return verified(directory / f"{cell_key(origin)}.json", {})',
          ("tests/test_selection.py::test_a_cell_is_reused_only_when_it_records_the_data_preprocessing_and_setting_"
           "asked_for",), "crossval.py reuses a cell file that records other data, preprocessing or setting"),
    Plant("pairs-made-from-unchecked", "data.py", 'what="pair table", expected=data_origin(output_dir))',
          'what="pair table", expected={})',
          (PROVENANCE + "a_pair_table_is_read_only_with_the_rows_and_split_it_was_made_from",),
          "pairs/ made from other rows or another split is read as the run's pair table"),
    Plant("first-frame-scored", "pipeline/images.py",
          'if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":', "if False:", (IMAGES,),
          "a multi-page TIFF or an animated image is scored by its first frame without a word"),
    Plant("disk-full-traceback", "pipeline/cli.py",
          "        if err.errno not in ENVIRONMENT_ERRNOS:\n            raise\n", "        raise\n",
          ("tests/test_cli.py",),
          "a full disk or a folder named as --out ends in a traceback"),
    Plant("bench-heads-population-sd", "bench/heads.py", "values.std(ddof=1)", "values.std()",
          ("tests/test_bench.py::test_heads_reports_the_sample_standard_deviation_over_seeds_and_none_for_one_seed",),
          "bench.heads reports the spread over seeds with n where cross-validation's report uses n - 1"),
    # ---- start-up and the ONNX path
    Plant("resample-truncates", "pipeline/resample.py", "np.full((n_out, *pixels.shape[1:]), 1 << (bits - 1),",
          "np.full((n_out, *pixels.shape[1:]), 0,", ("tests/test_resample.py",),
          "the numpy resize truncates its sums where torch's rounds: the ONNX path sees other pixels"),
    Plant("resample-window-unwidened", "pipeline/resample.py", "support = SUPPORT * max(scale, 1.0)",
          "support = SUPPORT", ("tests/test_resample.py",),
          "the numpy resize does not widen its window when reducing: aliasing torch's resize does not have"),
    Plant("onnx-path-imports-torch", "pipeline/scoring.py", "from PIL import Image\n",
          "import torch  # noqa: F401\nfrom PIL import Image\n",
          ("tests/test_startup.py::test_the_onnx_path_scores_without_torch_and_gives_the_scores_torch_s_resize_gives",),
          "predict.py --model and the API on an export load torch"),
    Plant("help-imports-the-model", "train.py", "from pipeline import cli, runs\n",
          "import model  # noqa: F401\nfrom pipeline import cli, runs\n", (STARTUP,),
          "train.py --help waits for torch and transformers to load"),
    Plant("selection-imports-pandas", "pipeline/selection.py", "import numpy as np\n",
          "import numpy as np\nimport pandas  # noqa: F401\n", (STARTUP,), "crossval.py --help waits for pandas"),
    # ---- a run folder is enough
    Plant("run-config-ignored", "pipeline/arguments.py", "if recorded is not None and recorded.is_file():",
          "if False:", RUN_FOLDER, "evaluate.py RUN reads the default config instead of the run's"),
    Plant("run-key-disagreement-allowed", "pipeline/arguments.py",
          "if name in KEYS and KEYS[name].role != RUNTIME and value != values.get(name, FIELD_DEFAULTS[name]):",
          "if False:", RUN_FOLDER, "a flag that describes another run is applied to this run's files"),
    Plant("default-config-from-the-working-folder", "pipeline/config.py",
          'DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "baseline.json"',
          'DEFAULT_CONFIG = Path("configs") / "baseline.json"', RUN_FOLDER,
          "predict.py --model X.onnx from another folder fails to read configs/baseline.json"),
    Plant("card-usage-names-the-machine-s-path", "pipeline/card.py",
          "out = Path(out.name) if out.is_absolute() else out", "out = out.resolve()",
          ("tests/test_card.py::test_train_writes_the_model_card_with_its_figures",),
          "the model card tells its readers to load a folder of the machine it was made on"),
    Plant("run-paths-relative-to-the-caller", "pipeline/config.py",
          "return {name: absolute(name, value) for name, value in values.items()}", "return values", RUN_FOLDER,
          "a run records data_dir as given, so evaluate.py RUN from another folder reads other data"),
    # ---- messages a user can act on
    Plant("unknown-flag-without-hint", "pipeline/arguments.py",
          'hints = [hint for word in unknown if word.startswith("--") and (hint := self.did_you_mean(word))]',
          "hints = []", MESSAGES_CONFIG, "--learning_rate is refused without saying that here it is --lr"),
    Plant("hub-names-not-mapped", "pipeline/arguments.py", "if HUB_NAMES.get(name) in flags:", "if False:",
          MESSAGES_CONFIG, "Hugging Face's names of our keys get no hint, or a wrong one"),
    Plant("few-artists-unwarned", "data.py", "if artists < FEW_ARTISTS:", "if artists < 0:",
          ("tests/test_data.py::test_a_held_out_split_of_fewer_than_five_artists_is_warned_about",),
          "a validation split of 2 artists draws no warning"),
    Plant("gates-unexplained", "evaluate.py", 'lines.append(f"  ({gates_legend()})")', 'lines.append("")',
          ("tests/test_evaluate.py::test_the_console_says_what_each_gate_means_and_where_it_comes_from",),
          "the console prints PASS/FAIL against bare numbers, with no word of what each gate means"),
    Plant("criteria-unsaid", "train.py", "    log(selection_rules(cfg))\n", "",
          ("tests/test_train.py::test_req_s_002_early_stop_when_val_loss_stalls",),
          "the best marker follows val accuracy and patience val loss, and the console does not say so"),
    Plant("header-case-sensitive", "pipeline/sources.py", 'key = re.sub(r"[\\s_-]+", "_", name.strip().lower())',
          "key = name.strip()", ("tests/test_sources.py", "-m", "not slow"),
          "a header File_Name,Tier,Artist is refused as missing its columns"),
    Plant("separator-commas-only", "pipeline/sources.py", "separator = sniff_separator(text)", 'separator = ","',
          ("tests/test_sources.py", "-m", "not slow"), "a ;-separated sheet is refused as missing its columns"),
    Plant("missing-files-cause-unsaid", "data.py",
          'cause = missing_files_cause(missing, Path(source.source).parent) if source.names_are_files else None',
          "cause = None", ("tests/test_data.py::test_missing_files_that_share_one_fixable_cause_are_said_in_one_line",),
          "80 'file not found' lines and no word that each file_name carries the data folder's name"),
    Plant("config-printed-by-every-script", "predict.py", "        if cfg.verbose:  # train.py prints it",
          "        if True:  # train.py prints it",
          ("tests/test_predict.py::test_the_resolved_config_is_printed_by_train_once_and_by_predict_only_with_verbose",),
          "every script prints the whole config on every start"),
    # ---- installable and shareable
    Plant("provider-ignored", "pipeline/scoring.py",
          "    available, asked = onnxruntime.get_available_providers(), provider\n",
          '    available, asked = onnxruntime.get_available_providers(), provider\n    provider = "auto"\n',
          (PROVIDER,), "--provider cuda on a machine without it runs on the CPU, unsaid"),
    Plant("fp16-file-ignored", "pipeline/scoring.py", 'chosen = FILE_NAMES["fp16" if fp16 else "fp32"]',
          'chosen = FILE_NAMES["fp32"]', (PROVIDER,), "--fp16 scores with model.onnx"),
    Plant("card-without-license", "pipeline/sharing.py", "    card.data.license = license\n", "",
          (SHARING + "the_upload_folder_holds_the_export_and_the_card_with_license_base_model_and_metrics",),
          "the model card uploaded to the hub states no license"),
    Plant("upload-before-asking-the-hub", "pipeline/sharing.py", "        check_hub(repo_id)\n        api = HfApi()",
          "        api = HfApi()", (SHARING + "an_export_missing_a_file_or_an_unreachable_hub_uploads_nothing",),
          "with the hub out of reach, the upload starts anyway"),
    Plant("hub-id-not-loaded", "artrank.py", "        path = hub_export(str(path))", "        pass",
          (SHARING + "artrank_loads_an_export_by_its_hub_id",), "artrank.load('owner/name') says no such folder"),
    # ---- the tier model
    Plant("tier-probabilities-cumulative", "pipeline/ordinal.py", "return np.diff(cumulative, axis=1)",
          "return cumulative[:, 1:]", TIER_UNIT, "P(tier) is the cumulative P(tier <= k), not its differences"),
    Plant("tier-thresholds-unordered", "pipeline/tier_head.py", "torch.cumsum(F.softplus(self.steps), dim=0)",
          "torch.cumsum(self.steps, dim=0)", TIER_UNIT, "threshold increments may be negative: thresholds cross"),
    Plant("tier-thresholds-placed-off-by-one", "pipeline/tier_head.py", "cumsum(0)[:3]", "cumsum(0)[1:]",
          TIER_UNIT, "the thresholds start at the wrong tier shares"),
    Plant("ordinal-loss-drops-lower-bound", "pipeline/losses.py",
          "F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))",
          "F.logsigmoid(upper) + F.logsigmoid(-lower)", TIER_UNIT,
          "the ordinal loss is not -log P(tier): a term of the written-out probability is lost"),
    Plant("ordinal-weight-ignored", "pipeline/losses.py",
          "return pair + ordinal_weight * ordinal_loss_terms(scores, ranks, thresholds).mean() if ordinal_weight",
          "return pair if ordinal_weight", TIER_UNIT, "training with a pair loss ignores ordinal_weight"),
    Plant("val-loss-ignores-ordinal", "pipeline/losses.py",
          "return all_pairs_loss(scores, ranks, margin, loss) + ordinal_weight * ordinal",
          "return all_pairs_loss(scores, ranks, margin, loss)", TIER_UNIT,
          "the validation loss is not the training objective of a tier model"),
    Plant("kappa-linear-weights", "pipeline/tier_metrics.py", "weight = (distance / (k - 1)) ** 2",
          "weight = distance / (k - 1)", TIER_UNIT, "the kappa is linear-weighted, not quadratic"),
    Plant("adjacent-is-exact", "pipeline/tier_metrics.py", "(distance <= 1)", "(distance < 1)", TIER_UNIT,
          "adjacent tier accuracy counts only the exact tier"),
    Plant("tier-interval-not-resampled", "pipeline/tier_metrics.py",
          "confusion_counts(tiers, predicted, drawn[:, artist_of])", "confusion_counts(tiers, predicted)",
          TIER_UNIT, "the tier figures' intervals resample nothing"),
    Plant("crossval-tier-sd-population", "pipeline/selection.py", "float(values.std(ddof=1)) if len(values) > 1",
          "float(values.std()) if len(values) > 1", TIER_UNIT,
          "cross-validation's sd of a tier figure divides by n, not n - 1"),
    Plant("head-tier-model-not-checked", "model.py", "feature=cfg.feature, tier_model=is_tier_model(cfg))",
          "feature=cfg.feature)", TIER_UNIT, "a head without thresholds is loaded by a tier-model config"),
    Plant("head-format-not-bumped", "model.py", "HEAD_FORMAT = 2", "HEAD_FORMAT = 1", TIER_UNIT,
          "a head of the format before tier models is read as if it said tier_model"),
    Plant("export-drops-thresholds", "pipeline/export.py", "tier_model_description(tier_thresholds)",
          "tier_model_description(None)", (TIER_END_TO_END,), "model.json leaves out the tier model's thresholds"),
    Plant("tier-hint-ignores-tier-model", "artrank.py", "if self.scorer.tier_thresholds is not None:",
          "if False:", TIER_UNIT, "a tier model's hint is the calibration band, not its most likely tier"),
    Plant("evaluate-tier-figures-for-every-head", "evaluate.py",
          "thresholds = heads[0].thresholds() if len(heads) == 1 else None",
          "thresholds = heads[0].linear.bias.detach().new_tensor([-1.0, 0.0, 1.0])", EVALUATE,
          "a head that is not a tier model gets made-up tier figures"),
    # ---- teachers' comparisons
    Plant("comparison-unknown-image-kept", "pipeline/comparisons.py",
          "               for side, image in zip((\"image_a\", \"image_b\"), found) if image is None]",
          "               for side, image in zip((\"image_a\", \"image_b\"), found) if image is None and False]",
          (COMPARISONS + "every_bad_comparison_row_is_named_at_once_and_skipped_on_request",),
          "a comparison naming an image the table does not hold is not named as a bad row"),
    Plant("comparison-self-pair-kept", "pipeline/comparisons.py", "        if not bad and found[0] == found[1]:",
          "        if False:", (COMPARISONS + "every_bad_comparison_row_is_named_at_once_and_skipped_on_request",),
          "an image compared with itself is taken as a judgement"),
    Plant("comparison-winner-unchecked", "pipeline/comparisons.py", "        if winner not in WINNERS:",
          "        if False:", (COMPARISONS + "every_bad_comparison_row_is_named_at_once_and_skipped_on_request",),
          "a winner other than a, b or tie is read as b"),
    Plant("comparison-contradiction-kept", "pipeline/comparisons.py",
          "        if len({verdict for _, verdict in judged}) > 1:", "        if False:",
          (COMPARISONS + "every_bad_comparison_row_is_named_at_once_and_skipped_on_request",),
          "one rater judging a pair both ways trains on both"),
    Plant("comparison-crossing-joins-a-split", "pipeline/comparisons.py",
          "split_a if split_a == split_b else CROSSING", "split_a",
          (COMPARISONS + "a_comparison_belongs_to_the_split_of_its_images_and_a_crossing_one_to_none",),
          "a comparison of a training and a test image counts as a training comparison"),
    Plant("leak-guard-ignores-comparisons", "data.py",
          "        rows = pd.concat([rows, whole[whole[\"image_id\"].isin(named)]], ignore_index=True)",
          "        pass", (COMPARISON_LEAK,),
          "a comparison with a test image passes the test-leak guard"),
    Plant("tie-as-a-win", "pipeline/losses.py", "        tied = 0.5 * (F.softplus(-gap) + F.softplus(gap))",
          "        tied = won", (COMPARISON_LOSS,),
          "a teacher's tie trains as a win of image a"),
    Plant("margin-tie-as-a-win", "pipeline/losses.py", "        tied = torch.clamp(gap.abs() - margin, min=0)",
          "        tied = torch.clamp(margin - gap, min=0)",
          (COMPARISON_LOSS,),
          "under the margin loss a tie pushes image a up by the margin"),
    Plant("ordinal-comparisons-unmapped", "pipeline/losses.py",
          '    loss = "logistic" if loss == "ordinal" else loss\n', "", (COMPARISON_LOSS,),
          "a tier model trained with comparisons fails on a loss it has no pair form of"),
    Plant("rater-weights-ignored", "pipeline/comparisons.py", '    if rule == "pooled" or len(raters) == 0:',
          "    if True:", (COMPARISON_LOSS,),
          "comparison_raters equal: a rater of many judgements still outvotes one of few"),
    Plant("comparison-weight-ignored", "model.py",
          "batch_loss = batch_loss + comparison_weight * step_comparison_loss(",
          "batch_loss = batch_loss + 1.0 * step_comparison_loss(",
          (COMPARISONS + "comparison_weight_adds_the_comparison_gradient_to_the_tier_pairs",),
          "comparison_weight 0.5 trains as 1"),
    Plant("comparison-order-unseeded", "pipeline/comparisons.py", "np.random.default_rng([seed, epoch])",
          "np.random.default_rng()",
          (COMPARISONS + "every_training_comparison_is_taken_once_an_epoch_in_an_order_of_seed_and_epoch_alone",),
          "a resumed epoch takes other comparisons at its remaining steps"),
    Plant("human-ties-counted-in-accuracy", "pipeline/comparison_metrics.py",
          '    kept = (comparisons["winner"] != "tie").to_numpy()', "    kept = np.ones(len(comparisons), bool)",
          (COMPARISON_EVAL,), "a teacher's tie counts as a comparison the model got wrong"),
    Plant("within-tier-is-across", "pipeline/comparison_metrics.py",
          "    within = np.array([tiers[a] == tiers[b]", "    within = np.array([tiers[a] != tiers[b]",
          (COMPARISON_EVAL,), "the within-tier accuracy is measured on pairs of different tiers"),
    Plant("agreement-counts-ties", "pipeline/comparison_metrics.py",
          '    wins = comparisons[comparisons["winner"] != "tie"]', "    wins = comparisons",
          (COMPARISON_EVAL,), "a tie against a win counts as raters disagreeing"),
    Plant("comparisons-not-in-the-data-identity", "pipeline/runs.py",
          "    if comparisons_sha256 is not None and recorded != comparisons_sha256:", "    if False:",
          (COMPARISONS + "a_changed_comparisons_file_is_another_run_s_data",),
          "a resumed run trains on an edited comparisons.csv unsaid"),
    Plant("comparison-table-origin-unchecked", "data.py",
          '    expected = data_origin(output_dir) | dict(comparisons_sha256=read_record(output_dir)["data"]',
          '    expected = data_origin(output_dir) or dict(comparisons_sha256=read_record(output_dir)["data"]',
          (COMPARISONS + "the_comparison_table_is_read_back_only_with_the_comparisons_file_it_was_made_from",),
          "comparisons/ of an older comparisons.csv is read as the run's"),
    Plant("comparisons-beside-a-dataset-file-ignored", "pipeline/sources.py",
          "    if Path(data_dir).is_file() and beside.is_file():", "    if False:",
          (COMPARISONS + "a_comparisons_file_beside_a_dataset_file_is_refused_not_ignored",),
          "a comparisons.csv beside a parquet file is silently not read"),
    Plant("demo-raters-without-noise", "pipeline/demo_data.py", "(rng.random() < RATERS[rater])", "False",
          (COMPARISONS + "the_demo_s_teachers_err_as_often_as_their_stated_noise_and_half_judge_within_one_student",),
          "the demo's teachers never err, so the rater agreement shows no ceiling"),
    # the teacher's page (issue 25): answer files, corrections, the page
    Plant("answer-written-twice", "pipeline/answers.py", "                if os.write(fd, payload) != len(payload):",
          "                if os.write(fd, payload + line) != len(payload) + len(line):",
          (ANSWERS + "each_judgement_is_one_row_on_disk_at_once",), "one judgement writes two rows"),
    Plant("answer-in-two-writes", "pipeline/answers.py", "                if os.write(fd, payload) != len(payload):",
          "                if os.write(fd, payload[:-1]) + (__import__('time').sleep(0.02) or "
          "os.write(fd, payload[-1:])) != len(payload):",
          (ANSWERS + "killing_the_writer_during_writes_loses_nothing_already_written",),
          "an answer written in pieces: a kill leaves half a line, and the file is refused from then on"),
    Plant("answer-header-unchecked", "pipeline/answers.py", "        if tuple(header) != self.columns:",
          "        if False:",
          (ANSWERS + "a_file_not_in_the_expected_form_is_refused_and_left_alone",),
          "rows of four fields appended under a header of three"),
    Plant("answer-cut-line-unchecked", "pipeline/answers.py", '        if not payload.endswith(b"\\n"):',
          "        if False:",
          (ANSWERS + "a_file_not_in_the_expected_form_is_refused_and_left_alone",),
          "an answer glued onto a line cut short"),
    Plant("undo-of-another-s-row", "pipeline/answers.py", '            if not payload.endswith(b"\\n" + line):',
          "            if False:", (ANSWERS + "undo_removes_only_this_session_s_last_row",),
          "undo removes another rater's last row"),
    Plant("corrections-not-applied", "pipeline/rows.py",
          "    return source, apply_corrections(rows, str(data_dir)), problems, notes",
          "    return source, rows, problems, notes",
          (CORRECTIONS + "the_latest_correction_of_an_image_is_its_tier_everywhere_rows_are_read",
           CORRECTIONS + "an_old_run_evaluated_after_a_correction_is_refused"),
          "training ignores the teachers' corrections.csv"),
    Plant("correction-of-unknown-image-dropped", "pipeline/corrections.py",
          "        if name is None:\n            problems.append(",
          "        if name is None:\n            continue\n            problems.append(",
          (CORRECTIONS + "a_bad_correction_is_refused_in_one_line_naming_the_file_and_line",),
          "a correction of an image the data does not hold is silently dropped"),
    Plant("correction-against-another-tier", "pipeline/corrections.py",
          "        elif given != current[name]:", "        elif False:",
          (CORRECTIONS + "a_bad_correction_is_refused_in_one_line_naming_the_file_and_line",
           CORRECTIONS + "a_correction_made_before_metadata_changed_is_refused"),
          "a correction made against another tier is applied over the current one"),
    Plant("queue-asks-judged-pairs-again", "pipeline/review_queues.py",
          '    return [row for row in rows if frozenset((row["image_a"], row["image_b"])) not in judged]',
          "    return rows", (REVIEW_APP + "the_queue_leaves_out_pairs_already_judged_and_refuses_unknown_images",),
          "the page asks again for pairs comparisons.csv already holds"),
    Plant("judge-keys-swapped", "pipeline/review_app.py", 'CHOICES = {"judge-a": "a", "judge-b": "b",',
          'CHOICES = {"judge-a": "b", "judge-b": "a",', (BROWSER,), "A is better is written as B is better"),
    Plant("undo-loses-the-pair", "pipeline/review_app.py", "        session.queue.insert(0, session.judged.pop())",
          "        session.judged.pop()", (BROWSER,), "an undone pair is never asked again"),
    Plant("page-on-every-interface", "pipeline/review_app.py", 'app.launch(server_name="127.0.0.1"',
          'app.launch(server_name="0.0.0.0"', (BROWSER,), "the page is served to the whole network"),
    # ---- the review: label audit and next pairs (issue 25)
    Plant("review-oof-head-saw-the-artist", "pipeline/out_of_fold.py",
          "return self.scores[self.fold_of, np.arange(self.scores.shape[1])]",
          "return self.scores[(self.fold_of + 1) % len(self.scores), np.arange(self.scores.shape[1])]",
          (REVIEW + "each_work_is_scored_by_the_head_that_never_saw_its_artist",),
          "a work's out-of-fold score comes from a head that trained on its artist"),
    Plant("review-held-fold-trained", "pipeline/out_of_fold.py",
          "np.flatnonzero((fold_of != held) & (fold_of != stopping))", "np.flatnonzero(fold_of != stopping)",
          (REVIEW + "each_work_is_scored_by_the_head_that_never_saw_its_artist",),
          "the fold head trains on the fold it holds out"),
    Plant("review-doubt-same-artist", "pipeline/label_audit.py", "reference = unseen & (artists != artists[work])",
          "reference = unseen", (AUDIT + "score_evidence_reads_each_tier_off_other_artists_works_the_same_head_never_"
                                  "trained_on",),
          "a work's score is read against its own artist's works"),
    Plant("review-doubt-trained-works", "pipeline/label_audit.py",
          "unseen = np.isin(heads.fold_of, fold_roles(fold, folds))", "unseen = heads.fold_of >= 0",
          (AUDIT + "score_evidence_reads_each_tier_off_other_artists_works_the_same_head_never_trained_on",),
          "a work's score is read against works its head was trained on, whose scores it fitted"),
    Plant("review-doubt-too-few-works", "pipeline/label_audit.py", "if (counts < 2).any():", "if (counts < 1).any():",
          (AUDIT + "a_head_missing_a_tier_among_its_unseen_works_gives_no_score_evidence",),
          "a tier's mean score is taken from one work"),
    Plant("review-doubt-pooled-raters", "pipeline/label_audit.py", 'own = counted & (judged["rater"] == rater)',
          "own = counted", (AUDIT + "a_raters_error_rate_counts_only_their_own_judgements_across_tiers_and_is_at_"
                             "most_a_half",),
          "every rater is given the error rate of all of them"),
    Plant("review-doubt-inverted-rater", "pipeline/label_audit.py", "/ (own.sum() + 2), 0.5)",
          "/ (own.sum() + 2), 1.0)",
          (AUDIT + "a_raters_error_rate_counts_only_their_own_judgements_across_tiers_and_is_at_most_a_half",),
          "a rater who mostly disagrees with the labels is read as saying the opposite"),
    Plant("review-doubt-ties-say-nothing", "pipeline/label_audit.py",
          "tie = 0.5 * (np.log(p) + np.log1p(-p))", "tie = 0.0 * p",
          (AUDIT + "judgement_evidence_is_the_log_likelihood_of_a_works_judgements_under_each_tier_by_hand",),
          "a tie is no evidence, though ties are far likelier between works alike"),
    Plant("review-doubt-partners-at-their-tier", "pipeline/label_audit.py",
          "partner = latent_qualities(ranks, judged, error)", "partner = ranks * TIER_GAP",
          (AUDIT + "judgement_evidence_is_the_log_likelihood_of_a_works_judgements_under_each_tier_by_hand",
           AUDIT + "a_work_that_beats_one_its_judgements_put_high_is_more_doubtful_than_one_that_beats_a_low_one"),
          "a judgement partner stands at its tier's middle, whatever its own judgements say"),
    Plant("review-doubt-latent-fit-one-sided", "pipeline/label_audit.py",
          '        np.add.at(grad, judged["b"], slope)\n', "",
          (AUDIT + "judgement_evidence_is_the_log_likelihood_of_a_works_judgements_under_each_tier_by_hand",),
          "the latent fit learns from a judgement for its first image only"),
    Plant("review-doubt-max-not-mean", "pipeline/label_audit.py",
          "logsumexp(others, axis=1) - np.log(len(CANDIDATES) - 1)", "others.max(axis=1)",
          (AUDIT + "doubt_is_the_log_mean_likelihood_of_the_other_tiers_over_the_given_ones",),
          "the doubt is the best other tier's likelihood, not their mean"),
    Plant("review-doubt-one-side-counted", "pipeline/label_audit.py",
          """    for work, other, outcome in ((judged["a"], judged["b"], judged["outcome"]),
                                 (judged["b"], judged["a"], -judged["outcome"])):""",
          """    for work, other, outcome in ((judged["a"], judged["b"], judged["outcome"]),):""",
          (AUDIT + "doubt_is_the_log_mean_likelihood_of_the_other_tiers_over_the_given_ones",
           AUDIT + "judgement_evidence_is_the_log_likelihood_of_a_works_judgements_under_each_tier_by_hand"),
          "only the first image of a judgement learns from it"),
    Plant("review-audit-least-doubtful-first", "pipeline/label_audit.py", "ascending=[False, True]",
          "ascending=[True, True]",
          (AUDIT + "the_audit_table_keeps_the_contract_columns_and_ranks_the_largest_doubt_first",),
          "rank 1 is the least doubtful label"),
    Plant("review-pairs-cross-splits", "pipeline/next_pairs.py", "keep = (splits[a] == splits[b]) & np.isin(",
          "keep = np.isin(",
          (REVIEW + "candidates_never_cross_splits_never_touch_test_and_never_repeat_a_judged_pair",),
          "a proposed pair joins a train work to a val or test one"),
    Plant("review-pairs-ask-test", "pipeline/next_pairs.py", 'SPLITS_ASKED = ("train", "val")',
          'SPLITS_ASKED = ("train", "val", "test")',
          (REVIEW + "candidates_never_cross_splits_never_touch_test_and_never_repeat_a_judged_pair",),
          "pairs of test works are proposed, and their answers would train later runs"),
    Plant("review-pairs-judged-one-order", "pipeline/next_pairs.py",
          'judged = set(zip(comparisons["image_a"], comparisons["image_b"])) | set(',
          'judged = set(zip(comparisons["image_a"], comparisons["image_b"])) or set(',
          (REVIEW + "candidates_never_cross_splits_never_touch_test_and_never_repeat_a_judged_pair",),
          "a pair judged as (b, a) is asked for again as (a, b)"),
    Plant("review-pairs-unsure-not-informative", "pipeline/next_pairs.py", "value = answer_information(p)",
          "value = 1.0 - np.abs(2.0 * mean - 1.0)",
          (REVIEW + "pairs_are_the_most_informative_first_with_the_heads_mean_and_spread_and_the_caps",),
          "pairs are asked for by how unsure the heads' mean is, not by what the answer would tell them apart"),
    Plant("review-pairs-agreeing-coin-flip-informative", "pipeline/next_pairs.py",
          "return entropy(p.mean(axis=0)) - entropy(p).mean(axis=0)", "return entropy(p.mean(axis=0))",
          (REVIEW + "an_answer_the_heads_agree_on_is_worth_nothing_however_unsure_and_sure_heads_that_split_most",),
          "a pair every head finds a coin flip counts as the most informative"),
    Plant("review-pairs-one-head", "pipeline/next_pairs.py", "mean, spread = p.mean(axis=0), p.std(axis=0)",
          "mean, spread = p[0], p.std(axis=0)",
          (REVIEW + "pairs_are_the_most_informative_first_with_the_heads_mean_and_spread_and_the_caps",),
          "p_a_better is one fold head's, not their mean"),
    Plant("review-pairs-image-cap-ignored", "pipeline/next_pairs.py", "max(used_image[i], used_image[j]) >= PER_IMAGE",
          "max(used_image[i], used_image[j]) >= PER_IMAGE + 10",
          (REVIEW + "one_work_the_heads_disagree_on_fills_no_more_than_its_share_of_the_pairs",),
          "one hard work fills the list of pairs"),
    Plant("review-untrained-run-read", "review.py", '    check_reader(cfg.output_dir, vars(cfg), what="review it")\n',
          "", (REVIEW + "refusals_are_one_line_and_write_nothing",), "a folder with no trained run is reviewed"),
    Plant("review-app-untrained-run", "review.py", 'check_reader(cfg.output_dir, vars(cfg), what="serve its page")',
          "pass", (REVIEW + "the_page_is_a_command_of_review_py_and_starts_only_on_a_trained_run",),
          "the page starts on a folder with no trained run"),
    Plant("review-comparisons-unchecked", "data.py",
          "check_same_data(run_dir, table, comparisons_sha256=judged)",
          "check_same_data(run_dir, table, comparisons_sha256=None)",
          (REVIEW + "refusals_are_one_line_and_write_nothing",),
          "the review's fold heads learn from judgements added after the run was trained"),
    Plant("review-write-not-atomic", "review.py",
          'atomic_write_text(out / LABEL_AUDIT, table.to_csv(index=False))',
          'out.mkdir(parents=True, exist_ok=True); (out / LABEL_AUDIT).write_text(table.to_csv(index=False))',
          (REVIEW + "next_pairs_stay_in_one_split_of_train_or_val_and_are_written_atomically",),
          "a kill while the audit is written leaves half a label_audit.csv"),
    Plant("demo-latent-quality-of-another-seed", "pipeline/demo_data.py",
          "for artist, i, _, _, q in planned_works(num_artists, works_per_artist, seed)}",
          "for artist, i, _, _, q in planned_works(num_artists, works_per_artist, seed + 1)}",
          ("tests/test_bench.py::test_the_demo_s_latent_quality_is_the_one_its_tiers_are_cut_from",),
          "the active-pairs simulation's teachers judge by another data set's quality"),
    Plant("active-pairs-start-keeps-all", "bench/active_pairs.py",
          "return judged.iloc[np.sort(rng.choice(len(judged), start, replace=False))].reset_index(drop=True)",
          "return judged.iloc[np.sort(rng.choice(len(judged), start + 1, replace=False))].reset_index(drop=True)",
          ("tests/test_bench.py::test_active_pairs_start_keeps_exactly_k_of_the_train_and_val_comparisons_drawn_by_"
           "seed",),
          "the active-pairs simulation starts from one comparison more than --start"),
    Plant("active-pairs-signal-noise-only", "bench/active_pairs.py",
          "signal * (q[:, None] - 0.5) / 0.2 * direction + rng.normal", "0.0 * direction + rng.normal",
          ("tests/test_bench.py::test_active_pairs_quality_signal_appends_columns_that_carry_the_latent_quality_and_"
           "leaves_zero_alone",),
          "the active-pairs simulation's quality columns are noise alone"),
    Plant("active-pairs-no-heads-accepted", "bench/active_pairs.py", "if args.heads < 1 or args.quality_columns < 1",
          "if args.quality_columns < 1",
          ("tests/test_bench.py::test_active_pairs_refuses_no_heads_no_columns_or_a_negative_signal_before_any_work",),
          "the active-pairs simulation averages over no head at all: every figure nan"),
    # ---- how sure it is: the calibration of P(A better) measured, tier sets with coverage (issue 26)
    Plant("conformal-fitted-on-test", "train.py",
          'fit_tier_sets(scores["val"], val_tiers, rule, alpha=cfg.conformal_alpha)',
          'fit_tier_sets(scores["test"], tiers_of(frames[SPLITS.index("test")]), rule, alpha=cfg.conformal_alpha)',
          (TIER_SETS_RUN,), "the tier sets' conformal threshold is fitted on the test split"),
    Plant("conformal-bands-from-validation", "train.py",
          'rule = tier_set_rule(scores["train"], tiers_of(frames[SPLITS.index("train")]),',
          'rule = tier_set_rule(scores["val"], val_tiers,', (TIER_SETS_RUN,),
          "the tier bands are fitted on the validation images that then fit the threshold: no guarantee"),
    Plant("conformal-rank-without-correction", "pipeline/tier_sets.py",
          "rank = math.ceil((len(values) + 1) * (1 - alpha))", "rank = math.ceil(len(values) * (1 - alpha))",
          TIER_SETS, "the conformal quantile lacks its (n + 1) correction: coverage below 1 - alpha"),
    Plant("tier-set-not-adjacent", "pipeline/tier_sets.py", "sets.append(tuple(TIERS[held[0]:held[-1] + 1]))",
          "sets.append(tuple(TIERS[i] for i in held))", TIER_SETS, "a tier set skips a tier: {A, C}"),
    Plant("tier-set-may-be-empty", "pipeline/tier_sets.py",
          "    inside[np.arange(len(misfit)), np.argmin(misfit, axis=1)] = True", "", TIER_SETS,
          "a score between the bands gets an empty tier set"),
    Plant("tier-bands-closed-at-the-ends", "pipeline/tier_sets.py",
          "    high[TIERS.index(present[0])], low[TIERS.index(present[-1])] = np.inf, -np.inf\n", "", TIER_SETS,
          "a score above every S score counts as evidence against S"),
    Plant("ece-signed-gaps", "pipeline/reliability_measures.py", "ece = np.abs(won - p).sum(axis=1) / total",
          "ece = np.abs((won - p).sum(axis=1)) / total", RELIABILITY,
          "ECE sums signed gaps: over- and under-confident bins cancel"),
    Plant("ece-one-orientation", "pipeline/reliability_measures.py",
          "p, won, first, second = both_orientations(p_a, a_won, artist_a, artist_b)",
          "p, won, first, second = np.asarray(p_a, float), np.asarray(a_won, float), artist_a, artist_b",
          RELIABILITY, "ECE depends on which image a table names first"),
    Plant("brier-absolute-error", "pipeline/reliability_measures.py", "weights=(p - won) ** 2,",
          "weights=np.abs(p - won),", RELIABILITY, "the Brier score is a mean absolute error"),
    Plant("reliability-interval-sums-artists", "pipeline/reliability_measures.py",
          "(block[:, occupied[0]] * block[:, occupied[1]])", "(block[:, occupied[0]] + block[:, occupied[1]])",
          RELIABILITY, "a pair counts draws(A) + draws(B) times in a resample, not their product"),
    Plant("reliability-ties-as-losses", "pipeline/reliability_measures.py",
          '    wins = comparisons[comparisons["winner"] != "tie"]\n    first, second',
          "    wins = comparisons\n    first, second", RELIABILITY,
          "a teacher's tie counts as image a losing in ECE and Brier"),
    Plant("evaluate-reliability-outcome-flipped", "evaluate.py", "label > 0, artists[a], artists[b],",
          "label < 0, artists[a], artists[b],",
          (RUN + "evaluate_measures_calibration_and_coverage_from_the_split_s_scores",),
          "ECE and Brier score P(A better) against A losing"),
    Plant("score-spread-sample-sd", "pipeline/ranker.py", "std(dim=0, correction=0)", "std(dim=0)",
          ("tests/test_model.py::test_the_score_spread_is_exactly_zero_for_identical_heads_and_else_their_standard_"
           "deviation",), "the spread over k heads is the sample sd (k - 1), not theirs"),
    Plant("score-spread-of-the-best-head-repeated", "model.py",
          "for m in top_members(cfg.output_dir)]", "for m in [checkpoint] * 3]",
          ("tests/test_artrank.py::test_python_api_scores_paths_and_pil_images_from_an_export_or_a_run",),
          "the spread is taken over copies of the best head: always 0"),
    # ---- how sure it is: unfamiliar drawings flagged, and the export's graph giving the spread (issue 26)
    Plant("novelty-threshold-on-test", "train.py", 'fit_novelty(nearest, features[SPLITS.index("val")],',
          'fit_novelty(nearest, features[SPLITS.index("test")],', (NOVELTY_RUN,),
          "the novelty threshold is fitted on the test split"),
    Plant("novelty-reference-of-all-splits", "train.py",
          'nearest = NearestTraining.fit(features[SPLITS.index("train")])',
          "nearest = NearestTraining.fit(__import__('torch').cat(features))", (NOVELTY_RUN,),
          "the validation images are in the reference: their novelty is 0 and the threshold means nothing"),
    Plant("novelty-not-about-the-mean", "pipeline/ranker.py",
          "return 1.0 - (unit_rows(features - self.mean) @ self.reference.T)",
          "return 1.0 - (unit_rows(features) @ self.reference.T)", NOVELTY,
          "the image's feature is compared about the origin, the training features about their mean"),
    Plant("novelty-reference-digest-unchecked", "pipeline/novelty.py",
          'if hashlib.sha256(payload).hexdigest() != fitted["reference_sha256"]:', "if False:", NOVELTY,
          "a reference of another training set is read against this threshold"),
    Plant("novelty-flag-never-shown", "predict.py",
          'if "unfamiliar" in extra and (odd :=', 'if False and (odd :=', (NOVELTY_RUN,),
          "predict.py prints no warning for an unfamiliar drawing"),
    Plant("export-spread-not-read", "pipeline/scoring.py", "columns = tuple(o.name for o in outputs)",
          "columns = (OUTPUT_NAME,)",
          ("tests/test_artrank.py::test_python_api_scores_paths_and_pil_images_from_an_export_or_a_run",
           "tests/test_predict.py::test_predict_ranks_the_same_on_onnx_and_on_pytorch"),
          "the export's spread is not read: an export seems to have none"),
    Plant("export-novelty-parity-unchecked", "pipeline/export.py",
          "failed = [name for name, check in checks.items() if not check.pop(\"ok\")]",
          "failed = [name for name, check in checks.items() if not check.pop(\"ok\") and name == OUTPUT_NAME]",
          ("tests/test_export_onnx.py::test_parity_of_every_output_is_checked",),
          "an export whose novelty or spread output is wrong passes its parity check"),
]


def check_snippets(plants: list[Plant], root: Path) -> list[str]:
    problems = []
    for p in plants:
        path = root / p.file
        count = path.read_text().count(p.old) if path.is_file() else 0
        if count != 1:
            problems.append(f"plant {p.name!r}: snippet found {count} times in {p.file} (expected once): {p.old!r}")
    return problems


def copy_tree(root: Path, target: Path) -> None:
    """The working tree as git sees it: tracked and untracked files, not ignored ones (.venv, runs, caches)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = root / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def existing_args(tests: tuple[str, ...], copy: Path) -> list[str]:
    """The plant's pytest arguments less the tests that this copy does not have."""
    kept = []
    for arg in tests:
        if arg.startswith("tests/"):
            file, _, name = arg.partition("::")
            if not (copy / file).is_file() or (name and not re.search(rf"def {re.escape(name)}\b",
                                                                       (copy / file).read_text())):
                continue
        kept.append(arg)
    return kept if any(a.startswith("tests/") for a in kept) else []


def run_plant(plant: Plant, copy: Path, timeout: float) -> tuple[str, str, float]:
    """(KILLED | SURVIVED | UNTESTED | TIMEOUT | ERROR, the failing test or a note, seconds)."""
    args = existing_args(plant.tests, copy)
    if not args:
        return "UNTESTED", "none of its tests exists here", 0.0
    path = copy / plant.file
    original = path.read_text()
    path.write_text(original.replace(plant.old, plant.new))
    start = time.monotonic()
    try:
        result = subprocess.run(["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                 "no:cacheprovider", "-o", "addopts=", "-rfE", *args], cwd=copy,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "TIMEOUT", f"over {timeout:.0f} s", time.monotonic() - start
    finally:
        path.write_text(original)
    seconds = time.monotonic() - start
    if result.returncode == 0:
        return "SURVIVED", "", seconds
    failed = [line for line in result.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    if result.returncode in (1, 2) and failed:  # 2: a test module no longer imports, also a catch
        return "KILLED", failed[0][:150], seconds
    # 3-5: pytest itself failed (a test path vanished, no test collected): says nothing about the plant
    return "ERROR", f"pytest exit {result.returncode}: {(result.stdout + result.stderr).strip()[-150:]}", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these plants only")
    parser.add_argument("--list", action="store_true", help="print the plants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per plant (default: %(default)s)")
    args = parser.parse_args()
    plants = PLANTS
    if args.only:
        unknown = set(args.only) - {p.name for p in PLANTS}
        if unknown:
            raise SystemExit(f"error: unknown plant(s) {sorted(unknown)}; --list shows them")
        plants = [p for p in PLANTS if p.name in args.only]
    problems = check_snippets(plants, ROOT)
    if problems:
        raise SystemExit("error: " + "\nerror: ".join(problems))
    if args.list:
        for p in plants:
            print(f"{p.name:40s} {p.file:12s} {p.wrong}")
        return
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="plant-copy-") as tmp:
        copy = Path(tmp)
        copy_tree(ROOT, copy)
        for p in plants:
            if not (copy / p.file).is_file():
                raise SystemExit(f"error: the copy in {copy} lost {p.file} (deleted from outside?); stopped "
                                 f"before plant {p.name!r}")
            outcome, note, seconds = run_plant(p, copy, args.timeout)
            counts[outcome] = counts.get(outcome, 0) + 1
            print(f"{outcome:8s} {p.name:40s} {seconds:6.1f} s  {note or p.wrong}", flush=True)
    print(f"{len(plants)} plants: " + ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items())))
    if counts.get("SURVIVED") or counts.get("UNTESTED"):
        print("survivors: a test that fails on them is missing")
    if counts.get("ERROR") or counts.get("TIMEOUT"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
