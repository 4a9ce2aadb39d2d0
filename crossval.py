"""Choose head settings by artist-grouped cross-validation on the train and val splits (cached features).

    python crossval.py --config configs/demo.json --grid configs/grid_demo.json [--folds 5]
    python train.py --config runs/demo/crossval/best.json

The works of the train and val splits (the test split is never used) are cut into --folds folds of
whole artists with the same tier mix. For every setting of the grid (JSON {key: [values]}, keys from
selection.GRID_KEYS; none: the config alone) and every fold, a head is trained as train.py trains it on
the other folds but one, which stops training early and picks the best epoch, and is scored on the
held-out fold. Writes into OUTPUT_DIR/crossval/:
  config.json               the resolved config
  results.csv, results.md   mean ± sd over folds of pairwise accuracy and Kendall tau per setting
  accuracy_by_setting.png   every fold's accuracy per setting
  best.json                 the config with the best setting, for train.py (output_dir OUTPUT_DIR/selected)
  cells/                    one result per (setting, fold): a rerun skips finished cells
  wandb/                    one run per setting, grouped by sweep
One crossval.py at a time per folder: it locks OUTPUT_DIR/crossval/.lock (a train.py of OUTPUT_DIR may run
beside it) and a second one is refused naming the first.
"""

import copy
import dataclasses
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

import selection
from config import Config, parse_config, print_config, save_config
from data import check_no_test_leak
from metrics import pair_margin_loss, pairwise_accuracy, rank_correlations, tier_ranks
from model import RankingHead
from runfolder import atomic_write_text
from tracking import choose_mode
from train import Progress, train_epoch
from workflow import load_split_features, load_table_for, locked_run_folder, make_accelerator, script_errors


def add_arguments(parser) -> None:
    parser.add_argument("--folds", type=int, default=5, help="artist folds (default: %(default)s)")
    parser.add_argument("--grid", default="", help="JSON grid {key: [values]} (default: the config alone)")


def fit_head(cfg: Config, fit_x: torch.Tensor, fit_r: torch.Tensor, stop_x: torch.Tensor, stop_tiers: np.ndarray):
    """train.py's training on cached features, kept in memory: returns (best head, best epoch, epochs run).

    The same epochs (train_epoch), the same stopping rules (patience on the stopping fold's loss,
    min_lr) and the same choice of the best epoch (the stopping fold's accuracy) as train.py.
    """
    accelerator = make_accelerator(cfg)  # one per head: its step counter then starts at zero
    set_seed(cfg.seed)
    head = RankingHead(input_dim=fit_x.shape[1], hidden_dim=cfg.hidden_dim, proj_dim=cfg.proj_dim,
                       dropout=cfg.dropout, score_head=cfg.score_head)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    head, optimizer = accelerator.prepare(head, optimizer)
    progress, best_state, best_epoch = Progress(), None, 0
    stop_r = torch.from_numpy(tier_ranks(stop_tiers))
    while progress.epoch < cfg.epochs:
        train_epoch(accelerator, head, optimizer, fit_x, fit_r, progress, batch_size=cfg.batch_size,
                    margin=cfg.margin, seed=cfg.seed, stop=[], pair_loss=cfg.loss)
        scheduler.step()
        head.eval()
        with torch.no_grad():
            scores = head(stop_x.to(accelerator.device)).float().cpu()
        accuracy, _ = pairwise_accuracy(scores.numpy(), stop_tiers)
        if accuracy > progress.best_val_acc:
            progress.best_val_acc, best_epoch = accuracy, progress.epoch
            best_state = copy.deepcopy(accelerator.unwrap_model(head).state_dict())
        loss = pair_margin_loss(scores, stop_r, cfg.margin, loss=cfg.loss)
        progress.stale_epochs = 0 if loss < progress.best_val_loss else progress.stale_epochs + 1
        progress.best_val_loss = min(loss, progress.best_val_loss)
        progress.epoch, progress.batches_done, progress.epoch_loss_sum = progress.epoch + 1, 0, 0.0
        lr = scheduler.get_last_lr()[0]
        if progress.stale_epochs >= cfg.patience or (lr < cfg.min_lr and progress.epoch < cfg.epochs):
            break
    best = accelerator.unwrap_model(head)
    best.load_state_dict(best_state)
    return best.eval(), best_epoch, progress.epoch


def run_cell(cfg: Config, *, rows, table, features: torch.Tensor, fold_of: np.ndarray, fold: int, folds: int) -> dict:
    """Train on all folds but two, stop early on one, score the held-out one."""
    started = time.perf_counter()
    held, stopping = selection.fold_roles(fold, folds)
    parts = {name: np.flatnonzero(mask) for name, mask in (
        ("fit", (fold_of != held) & (fold_of != stopping)), ("stop", fold_of == stopping), ("held", fold_of == held))}
    for index in parts.values():
        check_no_test_leak(rows.iloc[index], table)  # REQ-N-001: every frame that trains or scores a head
    tiers = rows["tier"].to_numpy()
    fit_r = torch.from_numpy(tier_ranks(tiers[parts["fit"]]))
    head, best_epoch, epochs_run = fit_head(cfg, features[parts["fit"]], fit_r, features[parts["stop"]],
                                            tiers[parts["stop"]])
    with torch.no_grad():
        scores = head(features[parts["held"]].to(next(head.parameters()).device)).float().cpu().numpy()
    accuracy, pairs = pairwise_accuracy(scores, tiers[parts["held"]])
    tau, _ = rank_correlations(scores, tiers[parts["held"]])
    return dict(fold=fold, accuracy=accuracy, kendall_tau=tau, pairs=pairs, best_epoch=best_epoch,
                epochs_run=epochs_run, images={name: len(index) for name, index in parts.items()},
                artists_held_out=int(rows["artist"].iloc[parts["held"]].nunique()),
                seconds=time.perf_counter() - started)


def track_setting(cfg: Config, *, label: str, group: str, directory: Path):
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.wandb_project, group=group, name=label, job_type="crossval", dir=str(directory),
                      config=dataclasses.asdict(cfg), mode=choose_mode(cfg.wandb_mode)[0], reinit="create_new",
                      settings=wandb.Settings(console="off", silent=True))


def train_val_features(cfg: Config, settings: list[dict], accelerator) -> tuple:
    """The train+val rows, their table, and their features per feature kind; test rows are never extracted.

    Returns (rows, table, {feature: tensor}, what the features depend on).
    """
    table = load_table_for(cfg, accelerator)
    rows = table[table.split != "test"].reset_index(drop=True)  # the test split goes no further
    check_no_test_leak(rows, table)
    features, backbone = {}, None
    for feature in dict.fromkeys(replace(cfg, **s).feature for s in settings):
        backbone, (features[feature],) = load_split_features(replace(cfg, feature=feature), [rows], accelerator,
                                                             backbone=backbone)
    source = dict(backbone=backbone.id, image_size=cfg.image_size, device=accelerator.device.type,
                  mixed_precision=accelerator.mixed_precision, data=selection.data_fingerprint(rows))
    return rows, table, features, source


def sweep(cfg: Config, settings: list[dict], *, folds: int, rows, table, features: dict, source: dict,
          out: Path) -> list[list[dict]]:
    """Every (setting, fold) cell, each stored as it finishes; finished cells are read back, not rerun."""
    fold_of = selection.artist_folds(rows, folds=folds, seed=cfg.seed)
    keys = [[selection.cell_key(replace(cfg, **s), fold=f, folds=folds, data=source["data"], features=source)
             for f in range(folds)] for s in settings]
    group = "crossval-" + selection.sweep_id(keys)
    results = [[selection.load_cell(out / "cells", key) for key in row] for row in keys]
    done = sum(r is not None for row in results for r in row)
    print(f"{len(settings)} setting(s) x {folds} folds over {len(rows)} train+val images by {rows.artist.nunique()} "
          f"artists (test split not used); sweep {group}, {done} cell(s) already done", flush=True)
    bar = tqdm(total=len(settings) * folds, initial=done, desc="cells", dynamic_ncols=True)
    for i, setting in enumerate(settings):
        if all(results[i]):
            continue
        label, setting_cfg = selection.setting_label(setting), replace(cfg, **setting)
        run = track_setting(setting_cfg, label=label, group=group, directory=out)
        for fold, key in enumerate(keys[i]):
            if results[i][fold] is None:
                results[i][fold] = run_cell(setting_cfg, rows=rows, table=table, features=features[setting_cfg.feature],
                                            fold_of=fold_of, fold=fold, folds=folds)
                selection.save_cell(out / "cells", key, {"setting": setting, **results[i][fold]})
                bar.update()
            r = results[i][fold]
            bar.write(f"{label} | fold {fold + 1}/{folds} | acc {r['accuracy']:.3f} | tau {r['kendall_tau']:.3f} | "
                      f"best epoch {r['best_epoch']} of {r['epochs_run']} | {r['seconds']:.1f} s")
            run.log({"fold/pairwise_acc": r["accuracy"], "fold/kendall_tau": r["kendall_tau"],
                     "fold/seconds": r["seconds"], "fold/best_epoch": r["best_epoch"]}, step=fold)
        summary = selection.summarize([setting], [results[i]]).iloc[0]
        run.summary.update({k: float(summary[k]) for k in ("accuracy_mean", "accuracy_sd", "kendall_tau_mean",
                                                           "kendall_tau_sd", "seconds_per_fold")})
        run.finish()
    bar.close()
    return results


def report(cfg: Config, settings: list[dict], results: list[list[dict]], *, folds: int, images: int,
           out: Path) -> None:
    """results.csv/md, the figure and best.json, and what to run next."""
    summary = selection.summarize(settings, results)
    selection.write_results(summary, out)
    selection.accuracy_figure(summary, [[r["accuracy"] for r in row] for row in results],
                              out / "accuracy_by_setting.png",
                              title=f"{folds}-fold cross-validation by artist, {images} train+val images")
    best = int(summary.index[summary["best"]][0])
    best_cfg = replace(cfg, **settings[best], output_dir=str(Path(cfg.output_dir) / "selected"), resume=False)
    atomic_write_text(out / "best.json", json.dumps(dataclasses.asdict(best_cfg), indent=2) + "\n")
    print((out / "results.md").read_text(), end="")
    print(f"best: {summary.loc[best, 'setting']}; {int(summary.within_1se.sum()) - 1} other setting(s) within one "
          "standard error of it (differences that small are noise at this data size)")
    print(f"wrote {out}/results.csv, accuracy_by_setting.png and best.json; train the best setting with:\n"
          f"  python train.py --config {out / 'best.json'}")


def main() -> None:
    cfg, args = parse_config(__doc__, add_arguments=add_arguments)
    out = Path(cfg.output_dir) / "crossval"
    print_config(cfg)
    with script_errors() as phase:
        settings = selection.expand_grid(selection.read_grid(args.grid), args.grid) if args.grid else [{}]
        accelerator = make_accelerator(cfg)
        # OUTPUT_DIR/crossval alone: a train.py of OUTPUT_DIR may run beside it, a second crossval may not.
        with locked_run_folder(replace(cfg, output_dir=str(out)), accelerator, "crossval.py"):
            rows, table, features, source = train_val_features(cfg, settings, accelerator)
            save_config(cfg, out / "config.json")
            phase.kept = f"every finished (setting, fold) in {out}; a rerun continues from there"
            # A head's small matrices gain nothing from more threads (on a busy CPU they cost many times over),
            # and one thread makes the table independent of the core count.
            torch.set_num_threads(1)
            results = sweep(cfg, settings, folds=args.folds, rows=rows, table=table, features=features,
                            source=source, out=out)
            report(cfg, settings, results, folds=args.folds, images=len(rows), out=out)


if __name__ == "__main__":
    main()
