"""The run's model card: OUTPUT_DIR/README.md in the Hugging Face layout, written from the run folder's files.

train.py and evaluate.py call `write_model_card(output_dir)` last, so the card always shows the latest
figures of config.json, final_metrics.json, eval_*.json, calibration.json and the run's rows (what is
missing is left out). Only artifacts made from the run's own checkpoints are shown (pipeline/provenance.py):
the results, the model index and the calibration are the best checkpoint's, an ensemble's figures and the
export are each named as what they are. The results section (`results_section`) holds no path, so the
README's demo table can be checked against a fresh run.
"""

import os
import platform
from pathlib import Path

from .calibration import read_calibration
from .comparison_metrics import comparison_summary
from .errors import ArtrankError
from .files import atomic_write_text, read_json
from .metrics import gate_results
from .provenance import MADE_FROM, made_from, verified
from .reliability_measures import reliability_lines
from .runs import RunFolderError, best_checkpoint, recorded_rows, top_members
from .state import read_final_metrics
from .tables import SPLITS, TIERS
from .tier_metrics import tier_summary

RANDOM_BACKBONE = "the backbone is random: its figures show that the pipeline works, not how well DINOv2 ranks drawings"


def machine_description() -> str:
    """CPU model and cores (or the GPU), and the torch version: what the last digits depend on."""
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        device = f"{cpu}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"
    return f"{device}; torch {torch.__version__}"


def origin_of(out: Path, *checkpoints: Path) -> dict | None:
    """What an artifact made from `checkpoints` of this run records; None when they cannot be read."""
    try:
        return made_from(out, *checkpoints)
    except ArtrankError:
        return None


def run_figures(out: Path) -> tuple[dict, dict | None, dict[str, float]]:
    """final_metrics.json, the best checkpoint's evaluation report (test first) and the accuracy by split of
    the latest of them. A report of another checkpoint or of an ensemble is not the shipped model's."""
    final = read_final_metrics(out) or {}
    best = origin_of(out, best_checkpoint(out))
    names = ["eval_test.json"] + sorted(p.name for p in out.glob("eval_*.json"))
    report = next((r for name in names if best and (r := verified(out / name, best)) and not r.get("ensemble")),
                  None)
    accuracy = dict(report["pairwise_accuracy_by_split"]) if report else {
        s: final[f"{s}/pairwise_acc"] for s in SPLITS if f"{s}/pairwise_acc" in final}
    return final, report, accuracy


def objective_description(cfg: dict) -> str:
    """The training loss a run's config names, in words."""
    pair = {"margin": f"margin ranking loss (margin {cfg.get('margin')}) over every cross-tier pair in a batch",
            "logistic": "logistic (RankNet) loss over every cross-tier pair in a batch"}.get(cfg.get("loss"))
    ordinal = "the tier model's cumulative-link loss of each image's tier"
    if pair is None:
        return ordinal
    return pair + (f" plus {cfg.get('ordinal_weight')} x {ordinal}" if cfg.get("ordinal_weight") else "")


def tier_section(tier: dict) -> str:
    """A tier model's figures: how often its most likely tier is the teachers' tier, and its confusion matrix."""
    lines = [f"Tier model (the most likely tier of P(S), P(A), P(B), P(C) against the teachers' tier): "
             f"{tier_summary(tier)} (95% intervals, artists resampled).", "",
             "| true \\ predicted | " + " | ".join(tier["confusion"]["tiers"]) + " |",
             "|---" * (len(tier["confusion"]["tiers"]) + 1) + "|"]
    lines += [f"| {true} | " + " | ".join(str(n) for n in row) + " |"
              for true, row in zip(tier["confusion"]["tiers"], tier["confusion"]["counts"])]
    return "\n".join(lines)


def results_section(output_dir: str | os.PathLike) -> str:
    """Markdown of the run's figures: gates, the evaluated split in detail, per tier pair. No paths."""
    final, report, accuracy = run_figures(Path(output_dir))
    lines = []
    if "best_epoch" in final:
        lines.append(f"Training ran {final['epochs_run']} epochs ({final['stop_reason']}); the best validation "
                     f"epoch was {final['best_epoch']}.\n")
    lines += ["| split | pairwise accuracy | spec gate | |", "|---|---|---|---|"]
    for split, gate in gate_results(accuracy).items():
        value, target, passed = gate["value"], gate["target"], gate["passed"]
        detail = ""
        if report and split == report["split"]:
            detail = (f" ({report['n_images']} images, {report['n_artists']} artists, {report['n_pairs']:,} pairs), "
                      f"95% CI [{report['ci95'][0]:.3f}, {report['ci95'][1]:.3f}]")
        lines.append(f"| {split}{detail} | **{value:.4f}** | {target} | {'PASS' if passed else 'FAIL'} |")
    if report:
        tau, rho = (f"{v:.3f}" if v is not None else "undefined" for v in (report["kendall_tau"], report["spearman"]))
        model = "ensemble of the top checkpoints" if report.get("ensemble") else "best checkpoint"
        lines += ["", f"{report['split'].capitalize()} split, {model}: Kendall tau-b {tau}, Spearman {rho}. "
                  "Accuracy per tier pair (adjacent tiers are the hard ones):", "",
                  "| tier pair | accuracy | pairs |", "|---|---|---|"]
        lines += [f"| {pair} | {acc:.3f} | {report['per_tier_pair_n_pairs'][pair]:,} |"
                  for pair, acc in report["per_tier_pair"].items()]
        if "tier_model" in report:
            lines += ["", tier_section(report["tier_model"])]
        summary = comparison_summary(report.get("comparisons"), report["split"].capitalize())
        if "reliability" in report:  # the calibration of P(A better) and the tier sets, in the same list
            summary += reliability_lines(report["reliability"])
        if summary:
            lines += ["", *(f"- {line.strip()}" for line in summary)]
    lines += ["", f"Made on: {machine_description()}. Ties count as wrong; the 95% intervals resample artists."]
    return "\n".join(lines) + "\n"


def other_models_section(out: Path) -> str:
    """Which model the figures above are, and the ensemble's figures and the export, each named as what it is."""
    final, lines = read_final_metrics(out) or {}, []
    epoch = f", epoch {final['best_epoch']}" if "best_epoch" in final else ""
    lines.append(f"The figures above are the best checkpoint's (`checkpoints/best`{epoch}).")
    members = top_members(out)
    ensemble = origin_of(out, *members) if members else None
    for path in sorted(out.glob("eval_*_ensemble.json")):
        if ensemble and (r := verified(path, ensemble)):
            lines.append(f"An ensemble of the {len(members)} top checkpoints (`evaluate.py --ensemble`, not the "
                         f"exported model) reaches {r['split']} pairwise accuracy {r['pairwise_accuracy']:.4f}, "
                         f"95% CI [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}].")
    export = verified(out / "model.json", origin_of(out) or {"run_id": None})
    if export:
        shipped = export[MADE_FROM].get("checkpoints") == (origin_of(out, best_checkpoint(out)) or {}).get(
            "checkpoints")
        lines.append("`model.onnx` is the best checkpoint." if shipped else
                     f"`model.onnx` is another checkpoint (`{Path(export['checkpoint']['path']).name}`, epoch "
                     f"{export['checkpoint']['epoch']}), not the one the figures above describe.")
    return " ".join(lines) + "\n"


def data_section(out: Path, cfg: dict) -> str:
    try:
        table = recorded_rows(out)
    except RunFolderError:
        return f"Data: `{cfg.get('data_dir')}` (the run folder records no rows).\n"
    counts = table.pivot_table(index="split", columns="tier", values="image_id", aggfunc="count", fill_value=0)
    counts = counts[[t for t in TIERS if t in counts.columns]]
    lines = [f"`{Path(cfg.get('data_dir', '')).name}`: {len(table)} drawings by {table.artist.nunique()} artists, "
             "teacher tiers S > A > B > C. Artists never cross splits (split by artist, stratified by tier, "
             f"seed {cfg.get('seed')}).", "", "| split | " + " | ".join(counts.columns) + " | images | artists |",
             "|---" * (len(counts.columns) + 3) + "|"]
    for split in SPLITS:
        if split in counts.index:
            row = counts.loc[split]
            artists = table[table.split == split].artist.nunique()
            lines.append(f"| {split} | " + " | ".join(str(int(v)) for v in row) + f" | {int(row.sum())} | {artists} |")
    return "\n".join(lines) + "\n"


def metadata_yaml(out: Path, cfg: dict, accuracy: dict[str, float], report: dict | None) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    dataset = Path(cfg.get("data_dir", "data")).name
    metrics = [("pairwise_accuracy", value, f"{split} pairwise accuracy", split) for split, value in accuracy.items()]
    if report:
        metrics += [(name, report[name], f"{report['split']} {label}", report["split"])
                    for name, label in (("kendall_tau", "Kendall tau-b"), ("spearman", "Spearman rho"))
                    if report.get(name) is not None]
    results = [EvalResult(task_type="image-ranking", task_name="Pairwise ranking of drawings",
                          dataset_type="imagefolder", dataset_name=dataset, dataset_split=split,
                          metric_type=kind, metric_value=round(value, 4), metric_name=name)
               for kind, value, name, split in metrics]
    backbone = cfg.get("backbone", "")
    on_hub = "/" in backbone and not cfg.get("random_backbone") and not Path(backbone).exists()
    data = ModelCardData(library_name="artrank", tags=["image-ranking", "pairwise-ranking", "dinov2", "onnx"],
                         base_model=backbone if on_hub else None, model_name=out.name, eval_results=results or None)
    return data.to_yaml()


def usage_section(out: Path) -> str:
    # The card travels with the folder (copied, uploaded): an absolute path would name the machine it was made on.
    out = Path(out.name) if out.is_absolute() else out
    return f"""```python
import artrank

model = artrank.load("{out}")  # the export (model.onnx + model.json) when there is one, else the checkpoint
model.score(["drawing.jpg", "another.png"])  # one score each, higher is better
model.compare("a.jpg", "b.jpg")  # which is better, P(A better) and tier hints
```

```bash
python predict.py --model {out}/model.onnx drawing.jpg another.png
python predict.py --model {out}/model.onnx --compare a.jpg b.jpg
```
"""


def model_card(output_dir: str | os.PathLike) -> str:
    out = Path(output_dir)
    cfg = read_json(out / "config.json") or {}
    _, report, accuracy = run_figures(out)
    try:
        calibration = read_calibration(out, checkpoint=best_checkpoint(out))
    except ArtrankError:
        calibration = None  # the card shows only what it can trust
    parts = ["---", metadata_yaml(out, cfg, accuracy, report).rstrip(), "---", "", f"# {out.name}", "",
             "Ranks drawings by quality as art-school teachers grade them (tiers S > A > B > C): a score per "
             "image, higher is better, learnt from pairs of works of different tiers on a frozen DINOv2 backbone.",
             ""]
    if cfg.get("random_backbone"):
        parts += [f"**Note:** {RANDOM_BACKBONE} (`random_backbone` is set).", ""]
    parts += ["## Data", "", data_section(out, cfg),
              "## Model", "",
              f"- backbone: `{cfg.get('backbone')}`{' (random weights)' if cfg.get('random_backbone') else ''}, "
              f"frozen; images letterboxed to {cfg.get('image_size')} px; feature `{cfg.get('feature')}`",
              f"- head: projector {cfg.get('hidden_dim')} -> {cfg.get('proj_dim')}, dropout {cfg.get('dropout')}, "
              f"score head `{cfg.get('score_head')}`",
              f"- training: {objective_description(cfg)}, batches of "
              f"{cfg.get('batch_size')}, AdamW lr {cfg.get('lr')} weight decay {cfg.get('weight_decay')}, cosine "
              f"schedule over {cfg.get('epochs')} epochs, early stopping patience {cfg.get('patience')}, seed "
              f"{cfg.get('seed')}", "",
              "## Results", "", results_section(out), other_models_section(out)]
    if calibration:
        cuts = ", ".join(f"{c['above']}/{c['below']} at {c['threshold']:.3f}" for c in calibration["tier_cuts"])
        parts += ["## Calibration", "",
                  f"P(A better than B) = sigmoid({calibration['slope']:.4g} x (score_A - score_B)), fitted on "
                  f"{calibration['pairs']:,} validation pairs. Tier hints cut the score at {cuts or 'no point'}: "
                  "a hint, not a grade."]
        if sets := calibration.get("tier_sets"):
            threshold = "none (every tier)" if sets["threshold"] is None else f"{sets['threshold']:.4g}"
            parts += ["", f"Tier sets (split conformal, alpha {sets['alpha']:g}, nonconformity `{sets['method']}`): "
                      f"threshold {threshold}, fitted on {sets['n']} validation images; each set holds the true "
                      f"tier with probability >= {1 - sets['alpha']:g}, marginally (not per tier or artist)."]
        parts.append("")
    parts += ["## How to use", "", usage_section(out),
              "## Limitations", "",
              "Teachers' tiers of one school; scores rank drawings of the kind trained on and are not a grade. "
              "Works of one artist stay in one split, so the test figures are for artists the model never saw.", ""]
    return "\n".join(parts)


def write_model_card(output_dir: str | os.PathLike) -> Path:
    """Write OUTPUT_DIR/README.md from the run folder's files; returns its path."""
    path = Path(output_dir) / "README.md"
    atomic_write_text(path, model_card(output_dir))
    return path
