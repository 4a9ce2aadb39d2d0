"""Evaluation figures, drawn with matplotlib's object interface (no pyplot state; PNG through Agg).

Each function takes plain arrays and an output path, writes one PNG atomically and returns its path.
"""

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from PIL import ImageOps

from .files import atomic_write_bytes
from .images import open_image
from .tables import TIER_PAIRS, TIERS

TIER_COLORS = {"S": "#1a7f4b", "A": "#67a9cf", "B": "#f0a340", "C": "#c8413b"}


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def score_by_tier(scores: np.ndarray, tiers: np.ndarray, path: str | os.PathLike, *, title: str) -> Path:
    """One box per tier (S to C) with every image as a dot: good scores fall from left to right."""
    present = [t for t in TIERS if (tiers == t).any()]
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    groups = [scores[tiers == t] for t in present]
    boxes = ax.boxplot(groups, positions=range(len(present)), widths=0.5, showfliers=False, patch_artist=True,
                       medianprops=dict(color="black", linewidth=1.5))
    jitter = np.random.default_rng(0)
    for x, (tier, values, box) in enumerate(zip(present, groups, boxes["boxes"])):
        box.set(facecolor=TIER_COLORS[tier], alpha=0.25, edgecolor=TIER_COLORS[tier])
        ax.scatter(x + jitter.uniform(-0.18, 0.18, len(values)), values, s=12, color=TIER_COLORS[tier],
                   alpha=0.7, edgecolors="none")
    ax.set_xticks(range(len(present)), [f"{t}\n({len(v)} images)" for t, v in zip(present, groups)])
    ax.set_xlabel("teacher tier")
    ax.set_ylabel("model score (higher = better)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return save_png(figure, path)


def tier_pair_heatmap(per_tier_pair: dict[str, tuple[float, int]], path: str | os.PathLike, *, title: str) -> Path:
    """Accuracy per tier pair: rows the higher tier, columns the lower; adjacent tiers on the diagonal."""
    upper, lower = TIERS[:-1], TIERS[1:]
    grid = np.full((len(upper), len(lower)), np.nan)
    figure = Figure(figsize=(5.2, 4.2))
    ax = figure.subplots()
    for name in TIER_PAIRS:
        u, low = name.split("-")
        i, j = upper.index(u), lower.index(low)
        if name in per_tier_pair:
            accuracy, pairs = per_tier_pair[name]
            grid[i, j] = accuracy
            ax.text(j, i, f"{accuracy:.1%}\n{pairs} pairs", ha="center", va="center", fontsize=9)
        else:
            ax.text(j, i, "no pairs", ha="center", va="center", fontsize=8, color="0.4")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0.0, vmax=1.0)
    # Cells below the diagonal are not tier pairs (B above A); they are blank, not zero.
    ax.imshow(np.where(np.tril(np.ones_like(grid), -1) > 0, 1.0, np.nan), cmap=ListedColormap(["white"]))
    ax.set_xticks(range(len(lower)), [f"lower: {t}" for t in lower])
    ax.set_yticks(range(len(upper)), [f"higher: {t}" for t in upper])
    ax.tick_params(length=0)
    ax.set_xlabel("adjacent tiers, the hard pairs, lie on the diagonal", fontsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="higher tier scored higher")
    ax.set_title(title, fontsize=10)
    return save_png(figure, path)


def extremes_sheet(paths: np.ndarray, scores: np.ndarray, tiers: np.ndarray, path: str | os.PathLike, *,
                   title: str, count: int = 8) -> Path:
    """The highest- and lowest-scored images, each with its rank, tier and score, framed in its tier's colour."""
    order = np.argsort(-scores, kind="stable")
    count = max(1, min(count, len(order) // 2))
    rows = (("highest scored", order[:count]), ("lowest scored", order[len(order) - count:]))
    figure = Figure(figsize=(1.75 * count, 4.8))
    axes = figure.subplots(2, count, squeeze=False)
    rank_of = np.empty(len(order), np.int64)
    rank_of[order] = np.arange(1, len(order) + 1)
    for (label, picks), row in zip(rows, axes):
        for i, ax in zip(picks, row):
            work_tile(ax, paths[i], f"#{rank_of[i]}  {tiers[i]}  {scores[i]:.3f}", tiers[i])
        row[0].set_ylabel(label, fontsize=10)
    figure.suptitle(title, fontsize=10)
    return save_png(figure, path)


def work_tile(ax, image_path: str, caption: str, tier: str) -> None:
    """One work in a square tile (the whole work, letterboxed), its caption on and its frame in its tier's colour."""
    thumbnail = ImageOps.contain(open_image(image_path), (200, 200))
    tile = np.full((200, 200, 3), 245, np.uint8)
    top, left = (200 - thumbnail.height) // 2, (200 - thumbnail.width) // 2
    tile[top:top + thumbnail.height, left:left + thumbnail.width] = np.asarray(thumbnail)
    ax.imshow(tile)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(caption, fontsize=9, color="white", fontweight="bold", backgroundcolor=TIER_COLORS[tier])
    for spine in ax.spines.values():
        spine.set(color=TIER_COLORS[tier], linewidth=3)


def doubt_sheet(paths: list[str], tiers: list[str], hints: list[str], doubts: list[float], path: str | os.PathLike, *,
                title: str, per_row: int = 6) -> Path:
    """The label audit's most doubtful works in rank order: rank, given tier -> hint, doubt; framed in the given
    tier's colour."""
    rows = max(1, -(-len(paths) // per_row))
    figure = Figure(figsize=(1.9 * per_row, 2.1 * rows + 0.4))
    axes = figure.subplots(rows, per_row, squeeze=False).ravel()
    for rank, (ax, image, tier, hint, doubt) in enumerate(zip(axes, paths, tiers, hints, doubts), start=1):
        work_tile(ax, image, f"#{rank}  {tier} -> {hint or '?'}  {doubt:.2f}", tier)
    for ax in axes[len(paths):]:
        ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    return save_png(figure, path)


def tier_confusion_heatmap(confusion: dict, path: str | os.PathLike, *, title: str) -> Path:
    """A tier model's confusion matrix: rows the true tier, columns the predicted one, counts and row shares."""
    counts = np.asarray(confusion["counts"], dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)
    figure = Figure(figsize=(5.2, 4.2))
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(TIERS)):
        for j in range(len(TIERS)):
            text = f"{int(counts[i, j])}" + (f"\n{share[i, j]:.0%}" if rows[i, 0] else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(TIERS)), [f"predicted {t}" for t in TIERS])
    ax.set_yticks(range(len(TIERS)), [f"true {t}" for t in TIERS])
    ax.tick_params(length=0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true tier's images")
    ax.set_title(title, fontsize=10)
    return save_png(figure, path)


def reliability_diagram(reports: dict[str, dict], path: str | os.PathLike, *, title: str) -> Path:
    """Share won against mean P(A better) per equal-width bin, one line per kind of pair (a dot's area is its
    bin's pairs); on the diagonal a printed P is right that often. The bins count both orientations."""
    figure = Figure(figsize=(5.6, 5.2))
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="calibrated")
    for (label, report), color in zip(reports.items(), ("#1f5fa8", "#c8413b")):
        diagram = report["diagram"]
        kept = [i for i, c in enumerate(diagram["count"]) if c]
        x, y = [diagram["mean_p"][i] for i in kept], [diagram["share_won"][i] for i in kept]
        sizes = np.asarray([diagram["count"][i] for i in kept], np.float64)
        ax.plot(x, y, color=color, linewidth=1.2,
                label=f"{label}: ECE {report['ece']:.3f}, Brier {report['brier']:.3f} ({report['n_pairs']:,} pairs)")
        ax.scatter(x, y, s=12 + 300 * sizes / sizes.max(), color=color, alpha=0.6, edgecolors="none")
    for edge in np.linspace(0, 1, next(iter(reports.values()))["bins"] + 1):
        ax.axvline(edge, color="0.9", linewidth=0.6, zorder=0)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean P(A better) in the bin",
           ylabel="share of the bin's pairs A won")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    return save_png(figure, path)
