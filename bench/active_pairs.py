"""Do the review's next pairs teach the head more than as many random pairs? A simulation on the demo data.

    python -m bench.active_pairs --config configs/demo.json [--rounds 3] [--n 100] [--seeds 1 2 3]
        [--start 300] [--heads 1] [--quality-signal 0] [--quality-columns 256]

Starts from the demo's tiers and its teachers' train and val comparisons: all of them, or --start of them drawn by
the seed (a teacher who has judged few pairs is the case the next pairs are for: on top of all 1,500, a few hundred
more move the head less than its seed noise). Within a seed both arms start from the same comparisons and train
with the same head seed, so the per-seed difference active - random is the measured effect. Each round adds --n
comparisons to each of two arms: the pairs `review.py pairs` would choose (model.fold_heads and
next_pairs.choose_pairs on that arm's data so far), or --n pairs drawn at random from the same candidates (one
split of train or val, the same or adjacent tiers, not yet compared). The demo's own synthetic teachers answer them
(demo_data.rater_answer, a teacher drawn at random per pair, from the latent quality demo_data.latent_quality).
After each round the head is trained again as train.py trains it (model.fit_head on the train split with its
comparisons, stopped on val; --heads of them, of head seeds seed, seed + 1000, ..., their figures averaged) and
scored on the test split against the latent quality: the share of test pairs further apart than the tie gap that
it orders as the latent quality does, over all pairs and within one tier.

The demo's random backbone sees little of the latent quality, so little that judgements move its head less than the
spread between seeds: --quality-signal S > 0 stands in for a backbone that sees it. Every work's features are
standardised (on the train and val works) and --quality-columns C columns are appended: S x (q - 0.5) / 0.2 along
one fixed direction, plus unit normal noise in each (drawn once from the config's seed: the same features for every
seed). A backbone's features are wide (ViT-L's are 2,048 numbers) and carry quality spread over many of them; the
more columns, the more the tiers leave the head's direction open, and the more a judgement can add.
Prints the curve per arm (mean and range over seeds), the per-seed difference active - random (mean, standard
error and range; all test pairs and within one tier) and writes the figure to --figure.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd


def with_quality_signal(features: list, qualities: list, signal: float, columns: int, seed: int) -> list:
    """`features` (train+val, then test: tensors of the works of latent qualities `qualities`) standardised on the
    first and each with `columns` columns that carry q: signal x (q - 0.5) / 0.2 along one unit direction, plus
    unit normal noise. Unchanged when signal is 0."""
    import torch

    if signal == 0:
        return features
    rng = np.random.default_rng([seed, columns])
    direction = rng.normal(size=columns)
    direction /= np.linalg.norm(direction)
    mean, sd = features[0].mean(dim=0), features[0].std(dim=0) + 1e-6
    return [torch.cat([(x - mean) / sd, torch.as_tensor(
        signal * (q[:, None] - 0.5) / 0.2 * direction + rng.normal(size=(len(q), columns)),
        dtype=x.dtype)], dim=1) for x, q in zip(features, qualities)]


def latent_accuracy(scores: np.ndarray, q: np.ndarray, tiers: np.ndarray) -> tuple[float, float]:
    """Share of pairs (|q difference| >= TIE_GAP) the scores order as q does: all pairs, and within one tier."""
    from pipeline.demo_data import TIE_GAP

    a, b = np.triu_indices(len(q), k=1)
    kept = np.abs(q[a] - q[b]) >= TIE_GAP
    right = np.sign(scores[a] - scores[b]) == np.sign(q[a] - q[b])
    within = kept & (tiers[a] == tiers[b])
    return float(right[kept].mean()), float(right[within].mean())


def starting_comparisons(judged: pd.DataFrame, start: int | None, rng) -> pd.DataFrame:
    """`start` of the train and val comparisons `judged`, drawn by `rng` (all of them when start is None)."""
    if start is None:
        return judged
    if not 0 <= start <= len(judged):
        raise ValueError(f"--start {start}: there are {len(judged)} train and val comparisons to start from")
    return judged.iloc[np.sort(rng.choice(len(judged), start, replace=False))].reset_index(drop=True)


def answered(rows: pd.DataFrame, a: np.ndarray, b: np.ndarray, q: np.ndarray, rng) -> pd.DataFrame:
    """Comparison rows for pairs (a, b) of `rows`, answered by a synthetic teacher each."""
    from pipeline.demo_data import RATERS, rater_answer

    raters = rng.choice(list(RATERS), len(a))
    return pd.DataFrame(dict(image_a=rows["image_id"].to_numpy()[a], image_b=rows["image_id"].to_numpy()[b],
                             winner=[rater_answer(q[i], q[j], r, rng) for i, j, r in zip(a, b, raters)],
                             rater=raters, split=rows["split"].to_numpy()[a]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=100, help="comparisons added per round and arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--start", type=int, default=None,
                        help="comparisons to start from, drawn by seed from the train and val ones (default: all)")
    parser.add_argument("--heads", type=int, default=1, help="head seeds each point's figures average over")
    parser.add_argument("--quality-signal", type=float, default=0.0,
                        help="features that carry the latent quality, this strong (0: the backbone's own)")
    parser.add_argument("--quality-columns", type=int, default=256,
                        help="columns the quality signal is spread over (with --quality-signal)")
    parser.add_argument("--figure", default="docs/figures/active_pairs.png")
    args = parser.parse_args(argv)
    if args.heads < 1 or args.quality_columns < 1 or args.quality_signal < 0:
        parser.error(f"--heads {args.heads}, --quality-columns {args.quality_columns} and --quality-signal "
                     f"{args.quality_signal:g}: the first two must be at least 1, the signal at least 0")

    import torch

    from data import load_comparisons, load_images, split_rows
    from model import features_of, fit_head, fold_heads, load_backbone, score_features
    from pipeline import cli
    from pipeline.comparisons import index_pairs
    from pipeline.config import load_config
    from pipeline.demo_data import latent_quality, tier_of
    from pipeline.next_pairs import candidate_pairs, choose_pairs
    from pipeline.tables import frame

    torch.set_num_threads(1)
    base = load_config(args.config)
    accelerator = cli.make_accelerator(base)
    table = load_images(base, accelerator)
    parts = [split_rows(table, "train", "val"), split_rows(table, "test")]
    features = features_of(base, parts, accelerator, backbone=load_backbone(base, accelerator))
    rows, test = frame(parts[0]), frame(parts[1])
    latent = latent_quality(seed=base.seed)
    q, q_test = (np.array([latent[Path(name).stem] for name in r["file_name"]]) for r in (rows, test))
    if any(tier_of(v) != t for v, t in zip(np.concatenate([q, q_test]), pd.concat([rows.tier, test.tier]))):
        raise SystemExit(f"{base.data_dir}: not the demo data set of seed {base.seed} (its tiers are not the "
                         "latent quality's)")
    x, x_test = with_quality_signal(features, [q, q_test], args.quality_signal, args.quality_columns,
                                     base.seed)
    judged = load_comparisons(base, accelerator, table)
    judged = judged[judged["split"].isin(["train", "val"])][["image_a", "image_b", "winner", "rater", "split"]]
    train = np.flatnonzero(rows["split"].to_numpy() == "train")
    val = np.flatnonzero(rows["split"].to_numpy() == "val")
    tiers, ids = rows["tier"].to_numpy(object), rows["image_id"].to_numpy(object)

    def accuracy(cfg, comparisons) -> tuple[float, float]:
        train_pairs = index_pairs(comparisons, ids[train], cfg.comparison_raters)
        figures = []
        for k in range(args.heads):
            head, _, _ = fit_head(replace(cfg, seed=cfg.seed + 1000 * k), x[train], tiers[train], x[val],
                                  tiers[val], comparisons=train_pairs)
            figures.append(latent_accuracy(score_features(head, x_test).numpy(), q_test,
                                           test["tier"].to_numpy(object)))
        return tuple(np.mean(figures, axis=0))

    curves = {arm: np.zeros((len(args.seeds), args.rounds + 1, 2)) for arm in ("active", "random")}
    for s, seed in enumerate(args.seeds):
        cfg, rng = replace(base, seed=seed), np.random.default_rng(seed)
        kept = starting_comparisons(judged, args.start, rng)
        start = accuracy(cfg, kept)
        data = {arm: kept for arm in curves}
        for arm in curves:
            curves[arm][s, 0] = start
        for round_ in range(1, args.rounds + 1):
            for arm in curves:
                if arm == "active":
                    chosen = choose_pairs(rows, fold_heads(cfg, x, rows, data[arm], folds=args.folds), data[arm],
                                          args.n)
                    index = {name: i for i, name in enumerate(rows["file_name"])}
                    a, b = chosen["image_a"].map(index).to_numpy(), chosen["image_b"].map(index).to_numpy()
                else:
                    ca, cb = candidate_pairs(rows, data[arm])
                    pick = rng.choice(len(ca), args.n, replace=False)
                    a, b = ca[pick], cb[pick]
                data[arm] = pd.concat([data[arm], answered(rows, a, b, q, rng)], ignore_index=True)
                curves[arm][s, round_] = accuracy(cfg, data[arm])
            print(f"seed {seed} round {round_}: " + " | ".join(
                f"{arm} {curves[arm][s, round_, 0]:.4f} (within tier {curves[arm][s, round_, 1]:.4f})"
                for arm in curves), flush=True)
    report(curves, args)


def report(curves: dict, args) -> None:
    from matplotlib.figure import Figure

    from pipeline.figures import save_png

    added = [args.n * r for r in range(args.rounds + 1)]
    print("\n| comparisons added | " + " | ".join(f"{arm} (mean [min, max]) | {arm} within tier" for arm in curves)
          + " |\n|---|" + "---|---|" * len(curves))
    for r, count in enumerate(added):
        cells = []
        for curve in curves.values():
            for m in (0, 1):
                values = curve[:, r, m]
                cells.append(f"{values.mean():.4f} [{values.min():.4f}, {values.max():.4f}]")
        print(f"| {count} | " + " | ".join(cells) + " |")
    # the measured effect is the paired difference: one seed's two arms share the start and the head seeds
    differences = [curves["active"][:, :, m] - curves["random"][:, :, m] for m in (0, 1)]
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    axes = figure.subplots(1, 3)
    for ax, m, label in zip(axes, (0, 1), ("all test pairs", "test pairs within one tier")):
        for arm, curve in curves.items():
            values = curve[:, :, m]
            ax.plot(added, values.mean(axis=0), marker="o", label=f"{arm} pairs")
            ax.fill_between(added, values.min(axis=0), values.max(axis=0), alpha=0.2)
        ax.set_ylabel("agreement with the latent quality")
        ax.set_title(f"{label}: mean and range over seeds", fontsize=10)
    for difference, label, colour in zip(differences, ("all test pairs", "within one tier"), ("C2", "C3")):
        axes[2].plot(added, difference.T, color=colour, alpha=0.15, linewidth=0.8)
        axes[2].errorbar(added, difference.mean(axis=0), yerr=[standard_error(d) for d in difference.T],
                         color=colour, marker="o", capsize=3, label=f"{label}: mean and standard error")
    axes[2].axhline(0.0, color="black", linewidth=0.8)
    axes[2].set_ylabel("active - random, per seed (thin lines)")
    axes[2].set_title("the per-seed difference", fontsize=10)
    for ax in axes:
        ax.set_xlabel("comparisons added (synthetic teachers)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    start = "all" if args.start is None else args.start
    seen = "the demo backbone's features" if args.quality_signal == 0 else (
        f"quality signal {args.quality_signal:g} in {args.quality_columns} columns")
    figure.suptitle(f"Review's next pairs vs random pairs, demo data from {start} comparisons, {seen}, "
                    f"{len(args.seeds)} seeds", fontsize=10)
    save_png(figure, args.figure)
    for difference, label in zip(differences, ("all test pairs", "test pairs within one tier")):
        print(f"\nactive - random per seed, {label}: " + "; ".join(
            f"{count} added {d.mean():+.4f} (se {standard_error(d):.4f}) [{d.min():+.4f}, {d.max():+.4f}]"
            for count, d in zip(added[1:], difference.T[1:])))
    gain = {arm: (c[:, -1, 0] - c[:, 0, 0]).mean() for arm, c in curves.items()}
    print(f"active_pairs: {added[-1]} comparisons added in {args.rounds} rounds, {len(args.seeds)} seeds: test "
          f"agreement with the latent quality {gain['active']:+.4f} (active) vs {gain['random']:+.4f} (random); "
          f"figure {args.figure}")


def standard_error(values: np.ndarray) -> float:
    """The standard error of the mean of `values` (nan for a single one)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


if __name__ == "__main__":
    main()
