"""Choose head settings by artist-grouped cross-validation on the train and val splits (cached features).

    python crossval.py --config configs/demo.json --grid configs/grid_demo.json [--folds 5]
    python train.py --config runs/demo/crossval/best.json

The works of the train and val splits (the test split is never used) are cut into --folds folds of
whole artists with the same tier mix. For every setting of the grid (JSON {key: [values]} over the
searchable config keys; none: the config alone) and every fold, a head is trained by train.py's own
procedure (model.HeadTraining) on the other folds but one, which stops training early and picks the best
epoch, and is scored on the held-out fold. Writes into OUTPUT_DIR/crossval/:
  config.json               the resolved config
  results.csv, results.md   mean ± sd over folds of pairwise accuracy and Kendall tau per setting, and for a
                            tier model's settings its exact tier accuracy and quadratic kappa
  accuracy_by_setting.png   every fold's accuracy per setting
  best.json                 the config with the best setting, for train.py (output_dir OUTPUT_DIR/selected)
  cells/                    one result per (setting, fold): a rerun skips finished cells
  wandb/                    one run per setting, grouped by sweep
One crossval.py at a time per folder: it locks OUTPUT_DIR/crossval/.lock (a train.py of OUTPUT_DIR may run
beside it) and a second one is refused naming the first.
"""

import dataclasses
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from pipeline import cli, selection
from pipeline.arguments import parse_config
from pipeline.config import CROSSVAL, Config, print_config, save_config
from pipeline.files import atomic_write_json
from pipeline.metrics import pairwise_accuracy, rank_correlations
from pipeline.runs import locked_run_folder
from pipeline.tables import frame
from pipeline.tier_metrics import tier_figures
from pipeline.tracking import choose_mode

if TYPE_CHECKING:
    import torch


def add_arguments(parser) -> None:
    parser.add_argument("--folds", type=int, default=5, help="artist folds (default: %(default)s)")
    parser.add_argument("--grid", default="", help="JSON grid {key: [values]} (default: the config alone)")


def run_cell(cfg: Config, *, rows, table, features: "torch.Tensor", fold_of: np.ndarray, fold: int,
             folds: int, comparisons=None) -> dict:
    """Train on all folds but two (with the teachers' comparisons among their images), stop early on one, score
    the held-out one (also on the comparisons among its images)."""
    from data import check_no_test_leak, tiers_of
    from model import fit_head, score_features
    from pipeline.comparison_metrics import accuracy_figures
    from pipeline.comparisons import index_pairs, no_comparisons

    started = time.perf_counter()
    held, stopping = selection.fold_roles(fold, folds)
    parts = {name: np.flatnonzero(mask) for name, mask in (
        ("fit", (fold_of != held) & (fold_of != stopping)), ("stop", fold_of == stopping), ("held", fold_of == held))}
    ids = np.asarray(rows["image_id"], dtype=object)
    comparisons = no_comparisons() if comparisons is None else comparisons
    for index in parts.values():
        check_no_test_leak(rows.select(index), table, comparisons)  # every part that trains or scores a head
    tiers = tiers_of(rows)
    fit_comparisons = index_pairs(comparisons, ids[parts["fit"]], cfg.comparison_raters)
    head, best_epoch, epochs_run = fit_head(cfg, features[parts["fit"]], tiers[parts["fit"]], features[parts["stop"]],
                                            tiers[parts["stop"]], comparisons=fit_comparisons)
    scores = score_features(head, features[parts["held"]]).numpy()
    held_ids = set(ids[parts["held"]])
    judged = accuracy_figures(dict(zip(ids[parts["held"]], scores)), comparisons[
        comparisons["image_a"].isin(held_ids) & comparisons["image_b"].isin(held_ids)], dict(zip(ids, tiers)))
    accuracy, pairs = pairwise_accuracy(scores, tiers[parts["held"]])
    tau, _ = rank_correlations(scores, tiers[parts["held"]])
    artists = np.asarray(rows["artist"], dtype=object)
    thresholds = head.thresholds()
    tier = {} if thresholds is None else tier_figures(scores, tiers[parts["held"]], thresholds.tolist())
    return dict(fold=fold, accuracy=accuracy, kendall_tau=tau, pairs=pairs, best_epoch=best_epoch, **tier,
                comparison_accuracy=judged["accuracy"], comparisons=judged["n_comparisons"],
                comparisons_within_tier=judged["within_tier_n"], comparison_accuracy_within_tier=judged["within_tier"],
                epochs_run=epochs_run, images={name: len(index) for name, index in parts.items()},
                artists_held_out=len(set(artists[parts["held"]])), seconds=time.perf_counter() - started)


def track_setting(cfg: Config, *, label: str, group: str, directory: Path):
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.wandb_project, group=group, name=label, job_type="crossval", dir=str(directory),
                      config=dataclasses.asdict(cfg), mode=choose_mode(cfg.wandb_mode)[0], reinit="create_new",
                      settings=wandb.Settings(console="off", silent=True))


def sweep(cfg: Config, settings: list[dict], *, folds: int, rows, table, features: dict, source: dict,
          out: Path, comparisons=None) -> list[list[dict]]:
    """Every (setting, fold) cell, each stored as it finishes; finished cells are read back, not rerun."""
    fold_of = selection.crossval_folds(frame(rows), folds=folds, seed=cfg.seed)
    origins = [[selection.cell_origin(replace(cfg, **s), fold=f, folds=folds, data=source["data"], features=source)
                for f in range(folds)] for s in settings]
    group = "crossval-" + selection.sweep_id(origins)
    results = [[selection.load_cell(out / "cells", origin) for origin in row] for row in origins]
    done = sum(r is not None for row in results for r in row)
    print(f"{len(settings)} setting(s) x {folds} folds over {len(rows)} train+val images by {len(set(rows['artist']))} "
          f"artists (test split not used); sweep {group}, {done} cell(s) already done", flush=True)
    bar = tqdm(total=len(settings) * folds, initial=done, desc="cells", dynamic_ncols=True)
    for i, setting in enumerate(settings):
        if all(results[i]):
            continue
        label, setting_cfg = selection.setting_label(setting), replace(cfg, **setting)
        run = track_setting(setting_cfg, label=label, group=group, directory=out)
        for fold, origin in enumerate(origins[i]):
            if results[i][fold] is None:
                results[i][fold] = run_cell(setting_cfg, rows=rows, table=table, features=features[setting_cfg.feature],
                                            fold_of=fold_of, fold=fold, folds=folds, comparisons=comparisons)
                selection.save_cell(out / "cells", origin, {"setting": setting, **results[i][fold]})
                bar.update()
            r = results[i][fold]
            judged = "" if r.get("comparison_accuracy") is None else f" | comparisons {r['comparison_accuracy']:.3f}"
            bar.write(f"{label} | fold {fold + 1}/{folds} | acc {r['accuracy']:.3f}{judged} | "
                      f"tau {r['kendall_tau']:.3f} | "
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
    atomic_write_json(out / "best.json", dataclasses.asdict(best_cfg))
    print((out / "results.md").read_text(), end="")
    print(f"best: {summary.loc[best, 'setting']}; {int(summary.within_1se.sum()) - 1} other setting(s) within one "
          "standard error of it (differences that small are noise at this data size)")
    print(f"wrote {out}/results.csv, accuracy_by_setting.png and best.json; train the best setting with:\n"
          f"  python train.py --config {out / 'best.json'}")


def main(argv: list[str] | None = None) -> None:
    with cli.one_line_errors() as phase:
        cfg, args = parse_config(__doc__, argv, script=CROSSVAL, add_arguments=add_arguments)
        out = Path(cfg.output_dir) / "crossval"
        print_config(cfg)
        settings = selection.expand_grid(selection.read_grid(args.grid), args.grid) if args.grid else [{}]
        accelerator = cli.make_accelerator(cfg)
        # OUTPUT_DIR/crossval alone: a train.py of OUTPUT_DIR may run beside it, a second crossval may not.
        with locked_run_folder(out, accelerator, "crossval.py"):
            from data import train_val_features

            feature_kinds = list(dict.fromkeys(replace(cfg, **s).feature for s in settings))
            rows, table, features, source, comparisons = train_val_features(cfg, feature_kinds, accelerator)
            save_config(cfg, out / "config.json")
            phase.kept = f"every finished (setting, fold) in {out}; a rerun continues from there"
            # A head's small matrices gain nothing from more threads (on a busy CPU they cost many times over),
            # and one thread makes the table independent of the core count.
            import torch

            torch.set_num_threads(1)
            results = sweep(cfg, settings, folds=args.folds, rows=rows, table=table, features=features,
                            source=source, out=out, comparisons=comparisons)
            report(cfg, settings, results, folds=args.folds, images=len(rows), out=out)


if __name__ == "__main__":
    main()
