"""Evaluate a trained head: pairwise accuracy with an honest interval, the spec's gates, and figures.

    python evaluate.py --config configs/demo.json [--split test] [--checkpoint DIR] [--ensemble true]

Reads the checkpoint (OUTPUT_DIR/checkpoints/best unless --checkpoint; with --ensemble every one in
OUTPUT_DIR/checkpoints/top/), DATA_DIR and backbone features from the feature cache
(extracting only what is missing). Each image is scored once and every cross-tier pair is compared
from the scores: O(N) backbone passes, where the spec's evaluator makes two per pair.
Reports train/val/test pairwise accuracy against the spec's gates (4.5.2) and, for --split, Kendall
tau-b, Spearman, accuracy per tier pair and a 95% interval from resampling artists.
Writes into OUTPUT_DIR (names end in _ensemble with --ensemble): eval_<split>.json,
scores_<split>.csv (image_id,file_name,tier,artist,score), figures/score_by_tier_<split>.png,
figures/tier_pair_accuracy_<split>.png, figures/extremes_<split>.png, and the wandb run (job evaluate).
For a tier model (loss ordinal or ordinal_weight > 0) also its confusion matrix, exact and adjacent tier
accuracy and quadratic weighted kappa with their artist intervals, and figures/tier_confusion_<split>.png.
With the run's calibration.json (the best checkpoint's): the expected calibration error and Brier score of
P(A better) on the split's cross-tier pairs and teachers' comparisons, figures/reliability_<split>.png, and
the tier sets' coverage and size, and the share of the split flagged unfamiliar (docs/uncertainty.md).
"""

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline import cli
from pipeline.arguments import parse_config
from pipeline.calibration import p_first_better, read_calibration
from pipeline.card import RANDOM_BACKBONE, write_model_card
from pipeline.comparison_metrics import comparison_accuracy, comparison_summary
from pipeline.config import EVALUATE, Config, print_config
from pipeline.errors import ArtrankError
from pipeline.files import atomic_write_json, atomic_write_text
from pipeline.metrics import (
    GATES,
    artist_bootstrap_ci,
    gate_results,
    gates_legend,
    pairwise_accuracy,
    per_tier_pair_accuracy,
    rank_correlations,
)
from pipeline.novelty import novelty_of, novelty_report, novelty_summary, read_reference
from pipeline.provenance import MADE_FROM, made_from, run_origin
from pipeline.reliability_measures import BINS, judged_pairs, pair_calibration, reliability_lines
from pipeline.runs import (
    check_reader,
    check_same_data,
    chosen_checkpoint,
    locked_run_folder,
    top_checkpoints,
    top_members,
)
from pipeline.tables import SPLITS, cross_tier_pairs, frame
from pipeline.tier_metrics import TIER_FIGURES, tier_report, tier_summary
from pipeline.tier_sets import tier_set_report
from pipeline.tracking import start_tracking, wandb_run

if TYPE_CHECKING:
    import torch

    from model import RankingHead


def checkpoint_dirs(cfg) -> tuple[Path, list[Path]]:
    """The single checkpoint, and the ensemble members when --ensemble (else none)."""
    single, top = chosen_checkpoint(cfg), top_checkpoints(cfg.output_dir)
    if not cfg.ensemble:
        return single, []
    members = top_members(cfg.output_dir)
    if not members:
        raise ArtrankError(f"{top}: no saved checkpoints to ensemble (train with --top_k 2 or more)")
    return single, members


def head_scores(heads: list["RankingHead"], features: "torch.Tensor") -> np.ndarray:
    """One score per image; an ensemble averages its members' scores."""
    import torch

    from model import score_features

    return torch.stack([score_features(head, features) for head in heads]).mean(dim=0).numpy()


def split_report(scores: np.ndarray, rows, *, resamples: int, seed: int, thresholds=None) -> dict:
    """Every figure of merit of one split, from one score per image; with a tier model's `thresholds`, also
    how well it names the tiers."""
    from data import tiers_of

    tiers, artists = tiers_of(rows), np.asarray(rows["artist"], dtype=object)
    accuracy, pairs = pairwise_accuracy(scores, tiers)
    tau, rho = rank_correlations(scores, tiers)
    per_pair = per_tier_pair_accuracy(scores, tiers)
    return dict(pairwise_accuracy=accuracy, n_pairs=pairs, n_images=len(rows), n_artists=len(set(artists)),
                kendall_tau=tau, spearman=rho,
                ci95=list(artist_bootstrap_ci(scores, tiers, artists, resamples=resamples, seed=seed)),
                per_tier_pair={name: acc for name, (acc, _) in per_pair.items()},
                per_tier_pair_n_pairs={name: n for name, (_, n) in per_pair.items()},
                **({} if thresholds is None else
                   {"tier_model": tier_report(scores, tiers, artists, thresholds, resamples=resamples, seed=seed)}))


def finite_or_none(value):
    """JSON has no NaN: an undefined correlation is written as null."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def console_report(results: dict[str, dict], split: str, out: Path, written: list[Path]) -> str:
    """The gates table (a column per model: ensemble and best single), then each model's details."""
    names = list(results)
    lines = ["pairwise accuracy " + "".join(f"{name:>24s}" for name in names) + "   spec gate"]
    for s, (op, bound) in GATES.items():
        cells = [f"{r['gates'][s]['value']:.4f} {'PASS' if r['gates'][s]['passed'] else 'FAIL'}"
                 for r in results.values()]
        lines.append(f"  {s:16s}" + "".join(f"{cell:>24s}" for cell in cells) + f"   {op} {bound:.2f}")
    lines.append(f"  ({gates_legend()})")
    for name, r in results.items():
        tau, rho = (f"{v:.3f}" if math.isfinite(v) else "undefined" for v in (r["kendall_tau"], r["spearman"]))
        lines += [f"{split}, {name}: accuracy {r['pairwise_accuracy']:.4f} over {r['n_pairs']} pairs "
                  f"({r['n_images']} images, {r['n_artists']} artists, ties count wrong)",
                  f"  95% CI [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}] ({r['bootstrap']['resamples']} resamples of "
                  f"artists) | Kendall tau-b {tau} | Spearman {rho}",
                  "  per tier pair: " + " | ".join(f"{pair} {acc:.3f} ({r['per_tier_pair_n_pairs'][pair]} pairs)"
                                                   for pair, acc in r["per_tier_pair"].items())]
        if "tier_model" in r:
            lines.append("  tier model: " + tier_summary(r["tier_model"]))
        lines += comparison_summary(r.get("comparisons"), f"{split}, {name}")
        lines += [f"  {line}" for line in reliability_lines(r["reliability"])]
    spread = next(iter(results.values())).get("score_spread") or {}
    if spread.get("mean_sd") is not None:
        lines.append(f"score spread over the {spread['members']} top checkpoints: sd mean {spread['mean_sd']:.4f}, "
                     f"median {spread['median_sd']:.4f}, max {spread['max_sd']:.4f}")
    if line := novelty_summary(next(iter(results.values())).get("novelty")):
        lines.append(line)
    return "\n".join(lines + [f"wrote into {out}: " + ", ".join(str(p.relative_to(out)) for p in written)])


def tracker_metrics(report: dict, prefix: str) -> dict[str, float]:
    split = report["split"]
    metrics = {f"{prefix}/{s}/pairwise_acc": a for s, a in report["pairwise_accuracy_by_split"].items()}
    metrics |= {f"{prefix}/{split}/{k}": report[k] for k in ("kendall_tau", "spearman", "n_pairs")}
    metrics |= {f"{prefix}/{split}/ci95_low": report["ci95"][0], f"{prefix}/{split}/ci95_high": report["ci95"][1]}
    metrics |= {f"{prefix}/{split}/tier_model/{k}": report["tier_model"][k] for k in TIER_FIGURES
                if "tier_model" in report}
    if (judged := report.get("comparisons")) and judged["n_comparisons"]:
        metrics |= {f"{prefix}/{split}/comparison_acc": judged["accuracy"],
                    f"{prefix}/{split}/comparison_n": judged["n_comparisons"]}
        metrics |= {f"{prefix}/{split}/comparison_acc/{r}": a for r, a in judged["per_rater"].items() if a is not None}
        if judged["within_tier_n"]:
            metrics[f"{prefix}/{split}/comparison_acc_within_tier"] = judged["within_tier"]
    for kind, measured in report["reliability"].items():
        metrics |= {f"{prefix}/{split}/{kind}/{k}": measured[k] for k in ("ece", "brier", "coverage", "mean_set_size")
                    if measured and k in measured}
    return metrics | {f"{prefix}/{split}/tier_pair/{p}": a for p, a in report["per_tier_pair"].items()}


def split_comparisons(scores: np.ndarray, rows, comparisons, cfg: Config) -> dict | None:
    """The accuracy on the split's teachers' comparisons (comparison_metrics), None when it has none."""
    from data import tiers_of

    own = comparisons[comparisons["split"] == cfg.split]
    if own.empty:
        return None
    ids = list(rows["image_id"])
    return comparison_accuracy(dict(zip(ids, scores)), own, dict(zip(ids, tiers_of(rows))),
                               dict(zip(ids, rows["artist"])), seed=cfg.seed, resamples=cfg.bootstrap)


def reliability_report(scores: np.ndarray, rows, comparisons, calibration: dict | None, cfg: Config) -> dict:
    """How far the calibrated P(A better) and the tier sets hold on the split (pipeline/reliability_measures.py,
    pipeline/tier_sets.py); each part None where the run has no calibration for these scores."""
    from data import tiers_of

    tiers, artists = tiers_of(rows), np.asarray(rows["artist"], dtype=object)
    if calibration is None:
        return dict(cross_tier=None, comparisons=None, tier_sets=None)
    a, b, label = cross_tier_pairs(tiers)
    cross_tier = pair_calibration(p_first_better(scores[a], scores[b], calibration), label > 0, artists[a], artists[b],
                                  resamples=cfg.bootstrap, seed=cfg.seed)
    first, second, a_won, ties = judged_pairs(comparisons[comparisons["split"] == cfg.split],
                                              {image_id: i for i, image_id in enumerate(rows["image_id"])})
    teachers = pair_calibration(p_first_better(scores[first], scores[second], calibration), a_won, artists[first],
                                artists[second], resamples=cfg.bootstrap, seed=cfg.seed)
    sets = calibration.get("tier_sets")
    return dict(cross_tier=cross_tier,
                comparisons=teachers and teachers | dict(n_ties=ties, ties="left out of ECE and Brier (n_ties)"),
                tier_sets=sets and tier_set_report(scores, tiers, artists, sets, resamples=cfg.bootstrap,
                                                   seed=cfg.seed))


def evaluate(cfg: Config, accelerator) -> tuple[dict[str, dict], np.ndarray, object]:
    """Reports per model (the ensemble first when there is one, then the best single checkpoint), and the
    first model's scores of the rows of cfg.split."""
    from data import comparisons_digest, load_comparisons, load_images, split_rows, tiers_of
    from model import features_of, head_identity, load_backbone, load_head

    table = load_images(cfg, accelerator)
    comparisons = load_comparisons(cfg, accelerator, table)
    # "test" must be the test split the head never saw, and its comparisons the ones the run was made with
    check_same_data(cfg.output_dir, table, comparisons_sha256=comparisons_digest(cfg.data_dir))
    single, members = checkpoint_dirs(cfg)
    # Heads first, so a checkpoint of another backbone or size is refused before any extraction.
    backbone = load_backbone(cfg, accelerator)
    identity, run = head_identity(cfg, backbone), run_origin(cfg.output_dir)
    models = {"best single": [load_head(single, identity=identity, run=run)[0].to(accelerator.device)]}
    calibration = read_calibration(cfg.output_dir, checkpoint=single)
    if members:
        models = {f"ensemble of {len(members)}": [load_head(m, identity=identity, run=run)[0].to(accelerator.device)
                                                  for m in members]} | models
    frames = [split_rows(table, s) for s in SPLITS]
    features = features_of(cfg, frames, accelerator, backbone=backbone)
    rows = frames[SPLITS.index(cfg.split)]
    results, split_scores = {}, {}
    for name, heads in models.items():
        scores = {s: head_scores(heads, x) for s, x in zip(SPLITS, features)}
        # An ensemble averages scores, not tier distributions: its tiers are not reported.
        thresholds = heads[0].thresholds() if len(heads) == 1 else None
        by_split = {s: pairwise_accuracy(scores[s], tiers_of(f)) for s, f in zip(SPLITS, frames)}
        accuracy_by_split = {s: accuracy for s, (accuracy, _) in by_split.items()}
        results[name] = dict(
            split=cfg.split, **split_report(scores[cfg.split], rows, resamples=cfg.bootstrap, seed=cfg.seed,
                                            thresholds=None if thresholds is None else thresholds.tolist()),
            pairwise_accuracy_by_split=accuracy_by_split, n_pairs_by_split={s: n for s, (_, n) in by_split.items()},
            gates=gate_results(accuracy_by_split), ties="count as wrong",
            bootstrap=dict(resamples=cfg.bootstrap, seed=cfg.seed, unit="artist"),
            comparisons=split_comparisons(scores[cfg.split], rows, comparisons, cfg),
            # calibration.json was fitted on the best checkpoint's scores: an ensemble's are other numbers
            reliability=reliability_report(scores[cfg.split], rows, comparisons, calibration if len(heads) == 1
                                           else None, cfg))
        split_scores[name] = scores[cfg.split]
    report = next(iter(results.values()))
    report |= dict(checkpoint=[str(m) for m in members] if members else str(single), ensemble=bool(members),
                   backbone=cfg.backbone, backbone_id=backbone.id, random_backbone=cfg.random_backbone,
                   image_size=cfg.image_size, feature=cfg.feature,
                   **{MADE_FROM: made_from(cfg.output_dir, *(members or [single]))})
    if members:
        report["best_single"] = results["best single"] | dict(checkpoint=str(single))
    top = [load_head(m, identity=identity, run=run)[0].to(accelerator.device) for m in top_members(cfg.output_dir)]
    report["score_spread"] = spread_report(top, features[SPLITS.index(cfg.split)])
    if fitted := (calibration or {}).get("novelty"):  # the share flagged unfamiliar, against the rate promised
        nearest = read_reference(cfg.output_dir, fitted)
        report["novelty"] = novelty_report(novelty_of(nearest, features[SPLITS.index(cfg.split)]), fitted)
    return results, next(iter(split_scores.values())), rows


def spread_report(heads: list["RankingHead"], features: "torch.Tensor") -> dict:
    """How far the top-k checkpoints' heads disagree on each image's score (ranker.score_spread), summarised."""
    import torch

    from pipeline.ranker import score_spread

    if len(heads) < 2:
        return dict(members=len(heads), mean_sd=None, median_sd=None, max_sd=None,
                    note="the run keeps fewer than two checkpoints (top_k): no spread")
    with torch.no_grad():
        sd = score_spread([h.eval() for h in heads], features.to(next(heads[0].parameters()).device)).cpu().numpy()
    return dict(members=len(heads), mean_sd=float(sd.mean()), median_sd=float(np.median(sd)), max_sd=float(sd.max()))


def write_outputs(cfg: Config, report: dict, scores: np.ndarray, rows) -> dict[str, Path]:
    """The JSON, the scores CSV and the figures; returns what was written, by name."""
    from data import tiers_of
    from pipeline.figures import (
        extremes_sheet,
        reliability_diagram,
        score_by_tier,
        tier_confusion_heatmap,
        tier_pair_heatmap,
    )

    out, tag = Path(cfg.output_dir), cfg.split + ("_ensemble" if report["ensemble"] else "")
    atomic_write_text(out / f"scores_{tag}.csv", frame(rows)[["image_id", "file_name", "tier", "artist"]]
                      .assign(score=scores.astype(np.float32)).to_csv(index=False))
    tiers, model = tiers_of(rows), "ensemble" if report["ensemble"] else "best checkpoint"
    caveat = f"\n({RANDOM_BACKBONE})" if cfg.random_backbone else ""
    ci = f"95% CI [{report['ci95'][0]:.1%}, {report['ci95'][1]:.1%}]"
    figures = {
        "score_by_tier": score_by_tier(scores, tiers, out / "figures" / f"score_by_tier_{tag}.png", title=(
            f"Scores by tier: {cfg.split} split, {model}\npairwise accuracy {report['pairwise_accuracy']:.1%}, "
            f"{ci}, Kendall tau-b {report['kendall_tau']:.2f}{caveat}")),
        "tier_pair_accuracy": tier_pair_heatmap(
            {p: (a, report["per_tier_pair_n_pairs"][p]) for p, a in report["per_tier_pair"].items()},
            out / "figures" / f"tier_pair_accuracy_{tag}.png",
            title=f"Accuracy per tier pair: {cfg.split} split, {model}{caveat}"),
        "extremes": extremes_sheet(list(rows["path"]), scores, tiers, out / "figures" / f"extremes_{tag}.png",
                                   title=f"Highest and lowest scored of {len(rows)} {cfg.split} images ({model}): "
                                         f"rank, tier, score{caveat}"),
    }
    measured = {label: report["reliability"][kind] for kind, label in (("cross_tier", "cross-tier pairs"),
                                                                       ("comparisons", "teachers' comparisons"))
                if report["reliability"][kind]}
    if measured:
        figures["reliability"] = reliability_diagram(
            measured, out / "figures" / f"reliability_{tag}.png",
            title=f"Calibration of P(A better): {cfg.split} split, {model}\n{BINS} equal-width bins, each pair in "
                  f"both orientations{caveat}")
    if "tier_model" in report:
        figures["tier_confusion"] = tier_confusion_heatmap(
            report["tier_model"]["confusion"], out / "figures" / f"tier_confusion_{tag}.png",
            title=f"Tier model: {cfg.split} split, {model}\n{tier_summary(report['tier_model'])}{caveat}")
    report["figures"] = {k: str(v) for k, v in figures.items()}
    atomic_write_json(out / f"eval_{tag}.json", finite_or_none(report))
    return {"json": out / f"eval_{tag}.json", "csv": out / f"scores_{tag}.csv", **figures}


def main(argv: list[str] | None = None) -> None:
    with cli.one_line_errors():
        cfg, _ = parse_config(__doc__, argv, script=EVALUATE)
        accelerator = cli.make_accelerator(cfg)
        with locked_run_folder(cfg.output_dir, accelerator, "evaluate.py"):
            check_reader(cfg.output_dir, dataclasses.asdict(cfg), what="evaluate it")
            if cfg.verbose and accelerator.is_main_process:  # train.py prints it, once per run
                print_config(cfg)
            results, scores, rows = evaluate(cfg, accelerator)
            report_and_write(cfg, accelerator, results, scores, rows)


def report_and_write(cfg: Config, accelerator, results: dict[str, dict], scores: np.ndarray, rows) -> None:
    report = next(iter(results.values()))
    start_tracking(accelerator, cfg, job_type="evaluate")
    accelerator.log(tracker_metrics(report, "eval_ensemble" if report["ensemble"] else "eval"))
    if accelerator.is_main_process:
        written = write_outputs(cfg, report, scores, rows)
        if (run := wandb_run(accelerator)) is not None:
            import wandb

            run.log({f"figures/{k}_{cfg.split}": wandb.Image(str(p)) for k, p in written.items() if k not in
                     ("json", "csv")})
        accelerator.print(console_report(results, cfg.split, Path(cfg.output_dir), list(written.values())))
        if cfg.random_backbone:
            accelerator.print(f"note: {RANDOM_BACKBONE}")
        accelerator.print(f"model card: {write_model_card(cfg.output_dir)}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
