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
UNIT_LOSS = ("tests/test_model.py",)
UNIT_CALIBRATION = ("tests/test_calibration.py",)
FAST_METRICS, FAST_DATA = UNIT_METRICS + ("-m", "not slow"), UNIT_DATA + ("-m", "not slow")
RUN = "tests/test_run_results.py::test_"
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
CACHE = RUN + "feature_cache_is_not_reused_after_new_backbone_weights_of_the_same_shape"
EVALUATE = ("tests/test_evaluate.py::test_evaluate_end_to_end",)
TRAIN = ("tests/test_train.py::test_req_e_005_n_005_best_checkpoint_is_saved_from_a_validated_best_epoch",
         "tests/test_train.py::test_req_o_001_gradient_accumulation_steps_the_optimizer_every_k_batches")
PROCEDURE = ("tests/test_model.py::test_training_stops_after_patience_epochs_without_a_better_val_loss_and_the_best_is_"
             "the_first_highest", "tests/test_model.py::test_top_k_keeps_the_best_and_an_earlier_epoch_wins_a_tie")
IMAGES, SCORING = "tests/test_images.py", "tests/test_scoring.py"
LAYOUT = "tests/test_layout.py"
STARTUP = "tests/test_startup.py::test_help_loads_no_heavy_library"
RUN_FOLDER = ("tests/test_config.py", "-m", "not slow")
PROVIDER = ("tests/test_predict.py::test_the_execution_provider_and_the_fp16_file_are_chosen_and_a_missing_provider_"
            "is_one_line")
SHARING = "tests/test_sharing.py::test_"
MESSAGES_CONFIG = ("tests/test_config.py::test_an_unknown_flag_gets_our_name_for_it",)
SOURCES = "tests/test_sources.py::test_a_saved_dataset_a_parquet_file_and_a_jsonl_folder_give_the_folder_s_table"

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
    Plant("eval-split-check-not-called", "evaluate.py", 'check_same_data(cfg.output_dir, table)', "None",
          (EVAL_REFUSES,) + EVALUATE, "evaluate.py scores a split other than the one the head was trained with"),
    Plant("eval-gate-test-0.55", "pipeline/metrics.py", '"test": (">=", 0.60)', '"test": (">=", 0.55)',
          ("tests/test_spec_values.py",) + EVALUATE, "the test gate is not the spec's 0.60"),
    Plant("eval-gate-train-0.85", "pipeline/metrics.py", '"train": ("<=", 0.80)', '"train": ("<=", 0.85)',
          ("tests/test_spec_values.py",) + EVALUATE, "the over-fitting gate is not the spec's 0.80"),
    Plant("eval-gate-strict", "pipeline/metrics.py", "accuracy_by_split[split] >= bound if",
          "accuracy_by_split[split] > bound if", ("tests/test_spec_values.py",) + EVALUATE,
          "an accuracy exactly at the gate fails it"),
    Plant("eval-not-tracked", "evaluate.py", 'start_tracking(accelerator, cfg, job_type="evaluate")', "None",
          (EVAL_WANDB,) + EVALUATE, "evaluate.py runs without a wandb run"),
    Plant("eval-bootstrap-seed-not-configured", "evaluate.py", "resamples=cfg.bootstrap, seed=cfg.seed)",
          "resamples=cfg.bootstrap, seed=0)", (EVAL_CI,) + EVALUATE, "the interval ignores --seed"),
    Plant("ensemble-one-member", "evaluate.py", "for m in members]} | models", "for m in members[:1]]} | models",
          EVALUATE, "the ensemble scores with one member"),
    Plant("eval-bootstrap-of-images", "evaluate.py", 'np.asarray(rows["artist"], dtype=object)',
          'np.asarray(rows["image_id"], dtype=object)', (EVAL_CI,) + EVALUATE,
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
    Plant("loss-same-tier-pairs", "model.py", "higher = ranks[:, None] > ranks[None, :]",
          "higher = ranks[:, None] >= ranks[None, :]", UNIT_LOSS + (LOSS,) + TRAIN,
          "the training loss includes same-tier pairs"),
    Plant("loss-margin-ignored", "model.py", "pair_loss_terms(scores[better] - scores[worse], margin, loss)",
          "pair_loss_terms(scores[better] - scores[worse], 1.0, loss)", UNIT_LOSS + (LOSS,) + TRAIN,
          "the training loss ignores the configured margin"),
    Plant("train-margin-ignored", "model.py", "batch_size=cfg.batch_size, margin=cfg.margin,",
          "batch_size=cfg.batch_size, margin=1.0,", (LOSS,) + TRAIN, "training ignores --margin"),
    Plant("loss-better-worse-swapped", "model.py", "pair_loss_terms(scores[better] - scores[worse], margin, loss)",
          "pair_loss_terms(scores[worse] - scores[better], margin, loss)", UNIT_LOSS + (LOSS,) + TRAIN,
          "the training loss pushes the worse image up"),
    Plant("val-loss-same-tier", "model.py", "higher = ranks[start:start + block, None] > ranks[None, :]",
          "higher = ranks[start:start + block, None] >= ranks[None, :]", UNIT_LOSS + (VAL_LOSS,) + TRAIN,
          "the validation loss includes same-tier pairs"),
    Plant("val-loss-sign", "model.py", "torch.clamp(margin - gap, min=0)", "torch.clamp(margin + gap, min=0)",
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
    Plant("train-calibration-on-train", "train.py", '        if name == "val":\n            calibration',
          '        if name == "train":\n            calibration', (CALIBRATION,) + TRAIN,
          "the calibration is fitted on training images"),
    # ---- features, backbones, calibration, predict
    Plant("cache-ignores-weights", "pipeline/backbones.py",
          'for path in sorted(directory.glob("*.json")) + weights:',
          'for path in sorted(directory.glob("*.json")):', (CACHE, "tests/test_features.py"),
          "new backbone weights of the same shape reuse the old cached features"),
    Plant("tier-hint-ignores-calibration", "pipeline/calibration.py", 'if score >= cut["threshold"]', "if score >= 0.0",
          (PREDICT,), "the tier hint ignores the calibration's cut points"),
    Plant("compare-ignores-slope", "pipeline/calibration.py", '0.5 * calibration["slope"] * (score_a - score_b)',
          "0.5 * (score_a - score_b)", (PREDICT,), "P(A better) ignores the fitted slope"),
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
    Plant("bootstrap-50-percent", "pipeline/metrics.py", "level: float = 0.95", "level: float = 0.5", FAST_METRICS,
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
    Plant("run-config-ignored", "pipeline/config.py", "if recorded is not None and recorded.is_file():",
          "if False:", RUN_FOLDER, "evaluate.py RUN reads the default config instead of the run's"),
    Plant("run-key-disagreement-allowed", "pipeline/config.py",
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
    Plant("unknown-flag-without-hint", "pipeline/config.py",
          'hints = [hint for word in unknown if word.startswith("--") and (hint := self.did_you_mean(word))]',
          "hints = []", MESSAGES_CONFIG, "--learning_rate is refused without saying that here it is --lr"),
    Plant("hub-names-not-mapped", "pipeline/config.py", "if HUB_NAMES.get(name) in flags:", "if False:",
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
