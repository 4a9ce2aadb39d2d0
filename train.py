"""Train the ranking head on frozen DINOv2 features.

    accelerate launch train.py --config configs/baseline.json
    python train.py --config configs/demo.json [--resume true] [--key value ...]

Reads DATA_DIR (a metadata.csv folder or a dataset) and its images. Backbone features come from the
feature cache in CACHE_DIR (each image extracted once); the head trains on every cross-tier pair within
each batch. Writes into OUTPUT_DIR: run.json, config.json, splits.csv and image_table/ (the rows and their
split), train_log.jsonl (one line per epoch), checkpoints/best/ and checkpoints/top/ (head.safetensors +
head.json), state/ (Accelerate state for --resume), calibration.json (P(A better), tier hints and the
tier sets' conformal threshold and the novelty threshold, all fitted on validation), novelty_reference.safetensors
(the training features an unfamiliar image is measured against), final_metrics.json, the model card README.md and
the wandb run.
"""

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from pipeline import cli, runs
from pipeline.arguments import parse_config
from pipeline.calibration import fit_calibration, write_calibration
from pipeline.card import write_model_card
from pipeline.config import TRAIN, print_config, save_config
from pipeline.metrics import pairwise_accuracy
from pipeline.provenance import remove_stale, run_origin
from pipeline.state import (
    load_state,
    read_final_metrics,
    save_state,
    saved_state,
    train_log,
    write_final_metrics,
    write_train_log,
)
from pipeline.tables import SPLITS
from pipeline.tier_sets import fit_tier_sets, tier_set_rule
from pipeline.tracking import sample_pairs_table, start_tracking


def main(argv: list[str] | None = None) -> None:
    with cli.one_line_errors() as phase:
        cfg, _ = parse_config(__doc__, argv, script=TRAIN)
        train(cfg, phase)


def train(cfg, phase) -> None:
    """Check everything that can be checked cheaply first, record the run, then train and test it."""
    # torch, transformers and datasets load here, after the flags were parsed: --help and a typo answer at once.
    from accelerate.utils import set_seed

    from data import check_data_dir, check_no_test_leak, comparisons_digest, load_comparisons, load_images, split_rows
    from model import load_backbone

    accelerator = cli.make_accelerator(cfg)
    out, config, log = Path(cfg.output_dir), dataclasses.asdict(cfg), accelerator.print
    cli.cpu_fallback_note(cfg, accelerator)
    set_seed(cfg.seed)
    resume = cfg.resume or bool(cfg.resume_from_checkpoint)
    if resume and cfg.overwrite_output_dir:
        raise runs.RunFolderError("--resume continues the run in output_dir, --overwrite_output_dir deletes it: "
                                  "pass one")
    with runs.locked_run_folder(out, accelerator, "train.py"):
        # The settings, the data folder, the backbone, then the image scan: a mistyped path, an unreachable hub
        # or an unsupported model fails in seconds, not after every image was checked.
        record = runs.check_resume(out, config) if resume else runs.check_fresh_start(
            out, config, overwrite=cfg.overwrite_output_dir)
        state = saved_state(out, cfg.resume_from_checkpoint) if resume else None
        if record and (finished := read_final_metrics(out)):
            log(f"{out} holds a finished run ({finished['stop_reason']}); nothing to resume")
            if accelerator.is_main_process and not (out / "README.md").is_file():  # killed before the card
                log(f"model card: {write_model_card(out)}")
            return
        check_data_dir(cfg, accelerator)
        backbone = load_backbone(cfg, accelerator)
        if record and record["backbone_id"] != backbone.id:
            raise runs.RunFolderError(f"cannot resume {out}: backbone weights {backbone.id} differ from the run's "
                                      f"{record['backbone_id']} ({cfg.backbone})")
        table = load_images(cfg, accelerator)
        comparisons, judged = load_comparisons(cfg, accelerator, table), comparisons_digest(cfg.data_dir)
        # A resumed run, or make_pairs.py's split (pairs/ labels it): a silent re-split would make those labels wrong.
        if record or (not cfg.overwrite_output_dir and runs.read_record(out)):
            runs.check_same_data(out, table, comparisons_sha256=judged)
        for name in ("train", "val"):  # guards, not conventions, before anything is written
            check_no_test_leak(split_rows(table, name), table, comparisons[comparisons["split"] == name])
        if accelerator.is_main_process:
            if cfg.overwrite_output_dir and not resume:
                removed = runs.remove_run(out)
                log(f"--overwrite_output_dir: deleted the previous run's {', '.join(removed) or 'nothing'}")
            print_config(cfg)
            save_config(cfg, out / "config.json")
            runs.write_record(out, config=config, table=table, stage="train", backbone_id=backbone.id,
                              run_id=record.get("run_id") if resume and record else None, comparisons_sha256=judged)
        accelerator.wait_for_everyone()
        phase.kept = f"the run's settings in {out}; extracted features in {cfg.cache_dir}"
        try:
            progress = train_head(cfg, accelerator, table, backbone, state, phase,
                                  comparisons[comparisons["split"] == "train"])
            phase.kept = f"the trained run in {out}; --resume scores the test split"
            test_best(cfg, accelerator, table, backbone, progress)
        finally:
            accelerator.end_training()


def train_head(cfg, accelerator, table, backbone, state: Path | None, phase, comparisons):
    """The head's training (from the saved state when resuming), with a checkpoint after each best
    validation, the top-k kept, a log line per epoch and the state saved after every epoch; `comparisons`
    are the training split's."""
    from data import split_rows, tiers_of
    from model import HeadTraining, features_of, head_meta, save_head, selection_rules
    from pipeline.comparisons import index_pairs

    out, log = Path(cfg.output_dir), accelerator.print
    train_rows, val_rows = split_rows(table, "train"), split_rows(table, "val")
    train_x, val_x = features_of(cfg, [train_rows, val_rows], accelerator, backbone=backbone)
    training = HeadTraining(cfg, accelerator, input_dim=train_x.shape[1])
    progress = training.progress
    if state is not None:
        load_state(accelerator, state, progress=progress, scheduler=training.scheduler)
        log(f"resumed from {state} (epoch {progress.epoch}, batch {progress.batches_done})")
    elif cfg.resume:
        log(f"--resume: no saved state in {out / runs.STATE}, starting from scratch")
    records = train_log(out, before_epoch=progress.epoch) if state is not None else []
    start_tracking(accelerator, cfg, job_type="train")
    meta = head_meta(cfg, backbone, input_dim=train_x.shape[1])
    val_tiers, val_paths = tiers_of(val_rows), list(val_rows["path"])

    def after_epoch(record: dict, val_scores) -> None:
        head, epoch_meta = training.unwrapped_head(), meta | {"epoch": progress.epoch,
                                                              "val_pairwise_acc": record["val/pairwise_acc"]}
        if record.get("best"):  # saved only after a validation
            if accelerator.is_main_process:
                save_head(head, runs.best_checkpoint(out), epoch_meta)
            picks = np.random.default_rng(cfg.seed).permutation(len(val_tiers))[:2 * cfg.sample_pairs]
            sample_pairs_table(accelerator, tiers=val_tiers, paths=val_paths, scores=val_scores, picks=picks,
                               step=progress.epoch)
        kept, dropped = progress.keep_top_k(record["val/pairwise_acc"], cfg.top_k)
        if accelerator.is_main_process:
            if kept:
                save_head(head, runs.top_checkpoints(out) / f"epoch{progress.epoch:04d}", epoch_meta)
            for epoch in dropped:
                shutil.rmtree(runs.top_checkpoints(out) / f"epoch{epoch:04d}", ignore_errors=True)
        accelerator.log({k: v for k, v in record.items() if k not in ("epoch", "best")}, step=progress.epoch)
        best = " | best val acc" if "best" in record else ""
        log(f"epoch {progress.epoch:3d} | train loss {record['train/loss']:.4f} | val loss {record['val/loss']:.4f} "
            f"| val acc {record['val/pairwise_acc']:.4f} | lr {record['lr']:.2e}{best}")
        if accelerator.is_main_process:
            records.append(record)
            write_train_log(out, records)

    log(selection_rules(cfg))
    judged = index_pairs(comparisons, train_rows["image_id"], cfg.comparison_raters)
    if len(judged["a"]):
        log(f"teachers' comparisons: {len(judged['a'])} of the training split, weight {cfg.comparison_weight:g}, "
            f"raters {cfg.comparison_raters}" + (" (weight 0: not trained on)" if cfg.comparison_weight == 0 else ""))
    with cli.deferred_interrupts() as interruption:
        finished = training.run(train_x, tiers_of(train_rows), val_x, val_tiers, after_epoch=after_epoch,
                                comparisons=judged,
                                after_step=lambda: save_state(accelerator, progress, out,
                                                                   scheduler=training.scheduler),
                                interruption=interruption)
    if not finished:
        phase.kept = f"state saved in {out / runs.STATE}; continue with --resume"
        raise KeyboardInterrupt
    log(progress.stop_reason)
    return progress


def test_best(cfg, accelerator, table, backbone, progress) -> None:
    """The test split is touched once, after training, with the best checkpoint; the calibration and the tier
    sets' conformal threshold are fitted on its validation scores."""
    from data import split_rows, tiers_of
    from model import features_of, head_identity, load_head, score_features

    out, frames = Path(cfg.output_dir), [split_rows(table, s) for s in SPLITS]
    best, best_meta = load_head(runs.best_checkpoint(out), identity=head_identity(cfg, backbone),
                                run=run_origin(out))
    features = features_of(cfg, frames, accelerator, backbone=backbone)
    results = {"stop_reason": progress.stop_reason, "epochs_run": progress.epoch, "best_epoch": best_meta["epoch"]}
    best, scores = best.to(accelerator.device), {}
    for name, x, rows in zip(SPLITS, features, frames):
        scores[name] = score_features(best, x).numpy()
        acc, pairs = pairwise_accuracy(scores[name], tiers_of(rows))
        results[f"{name}/pairwise_acc"], results[f"{name}/pairs"] = acc, pairs
    val_tiers, thresholds = tiers_of(frames[SPLITS.index("val")]), best.thresholds()
    calibration = fit_calibration(scores["val"], val_tiers)
    # The nonconformity is fixed by the training split and the head; the threshold sees validation alone.
    rule = tier_set_rule(scores["train"], tiers_of(frames[SPLITS.index("train")]),
                         None if thresholds is None else thresholds.tolist())
    calibration["tier_sets"] = fit_tier_sets(scores["val"], val_tiers, rule, alpha=cfg.conformal_alpha)
    accelerator.log({k: v for k, v in results.items() if "/" in k}, step=progress.epoch)
    if accelerator.is_main_process:
        from pipeline.novelty import fit_novelty, write_reference
        from pipeline.ranker import NearestTraining

        # The reference goes first: a calibration naming its digest never points at a file not yet written.
        nearest = NearestTraining.fit(features[SPLITS.index("train")])
        calibration["novelty"] = fit_novelty(nearest, features[SPLITS.index("val")], alpha=cfg.novelty_alpha,
                                             reference_sha256=write_reference(out, nearest))
        write_calibration(out, calibration, checkpoint=runs.best_checkpoint(out))
        if removed := remove_stale(out):  # a resume that found a better epoch: the partial run's results go
            accelerator.print(f"removed what described checkpoints this run no longer holds: {', '.join(removed)}")
        write_final_metrics(out, results)
        write_model_card(out)
    accelerator.print(f"best epoch {results['best_epoch']} | train acc {results['train/pairwise_acc']:.4f} | "
                      f"val acc {results['val/pairwise_acc']:.4f} | test acc {results['test/pairwise_acc']:.4f} "
                      f"({results['test/pairs']} test pairs)")


if __name__ == "__main__":
    main()
