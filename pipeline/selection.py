"""Model selection by cross-validation: the settings of a grid, artist folds, stored cells, the summary.

A cell is one (setting, fold): a head trained with that setting on the other folds and scored on the
held-out fold. Each cell records everything its result depends on (the setting, the fold, the data
manifest, the features, the preprocessing) as its made_from and is stored under a hash of it; a rerun reuses
a cell only when pipeline/provenance.py finds that record the one it asks for, so a changed grid or data
set computes new cells instead of mixing in old ones.
"""

import dataclasses
import hashlib
import io
import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import FEATURES, HEAD, SEARCHABLE, SPLIT, TRAINING, ConfigError, check_value, identity
from .files import atomic_write_json, atomic_write_text
from .images import PREPROCESSING_VERSION
from .provenance import MADE_FROM, verified
from .tables import artist_folds

if TYPE_CHECKING:  # pandas and matplotlib load where used: crossval.py --help and a bad grid answer at once
    import pandas as pd

# Bumped when a cell's procedure changes: older cells are recomputed, not reused. 2: a cell records its made_from.
CELL_FORMAT = 2


def read_grid(path: str | os.PathLike) -> dict:
    try:
        grid = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read grid {path}: {err}") from None
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: a grid is a JSON object of key: [values], e.g. {{\"lr\": [1e-4, 1e-3]}}")
    return grid


def expand_grid(grid: dict, source: str = "grid") -> list[dict]:
    """Every combination of the grid's values, in the grid's order (the first key varies slowest).

    Only the searchable keys may be swept: what changes the features, such as the backbone or the image
    size, is refused. Each value passes the same checks as a config file's.
    """
    for key, values in grid.items():
        if key not in SEARCHABLE:
            raise ConfigError(f"{source}: key {key!r} cannot be swept here (allowed: {', '.join(SEARCHABLE)})")
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{source}: key {key!r} needs a list of distinct values, got {values!r}")
    checked = {key: [check_value(key, value, source) for value in values] for key, values in grid.items()}
    return [dict(zip(checked, combo)) for combo in itertools.product(*checked.values())]


def setting_label(setting: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in setting.items()) or "config as given"


def crossval_folds(rows: "pd.DataFrame", *, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds-1) of each row: grouped by artist, stratified by tier (tables.artist_folds).

    Raises ConfigError when a fold would hold fewer than two tiers (no pair to score).
    """
    if folds < 3:
        raise ConfigError(f"--folds must be at least 3 (one fold scored, one for early stopping, the rest "
                          f"to train), got {folds}")
    artists = rows["artist"].nunique()
    if artists < folds:
        raise ConfigError(f"{folds} folds need works by at least {folds} artists, found {artists}")
    fold_of = artist_folds(rows, folds=folds, seed=seed)
    for fold in range(folds):
        tiers = sorted(set(rows["tier"].to_numpy()[fold_of == fold]))
        if len(tiers) < 2:
            raise ConfigError(f"fold {fold} holds tier(s) {tiers} only, so it has no cross-tier pair: "
                              f"too few artists per tier for {folds} folds; use fewer folds")
    return fold_of


def fold_roles(fold: int, folds: int) -> tuple[int, int]:
    """(scored fold, early-stopping fold): the next fold stops training, so the scored one stays unseen."""
    return fold, (fold + 1) % folds


def cell_origin(cfg, *, fold: int, folds: int, data: str, features: dict) -> dict:
    """Everything a cell's result depends on, its made_from: the keys of the split, the features, the head and
    its training (not the checkpoints kept or the runtime keys), the fold, the data manifest of the rows, what
    the features came from and the preprocessing version."""
    setting = identity(dataclasses.asdict(cfg), SPLIT, FEATURES, HEAD, TRAINING)
    origin = dict(format=CELL_FORMAT, setting=setting, fold=fold, folds=folds, manifest_sha256=data,
                  features=features, preprocessing=PREPROCESSING_VERSION)
    return json.loads(json.dumps(origin, sort_keys=True))  # as read back: tuples are lists


def cell_key(origin: dict) -> str:
    """The name of a cell's result: a hash of its made_from."""
    return hashlib.sha256(json.dumps(origin, sort_keys=True).encode()).hexdigest()[:20]


def sweep_id(origins: list[list[dict]]) -> str:
    """Names the sweep (its wandb group) by its cells: another grid or data set is another sweep."""
    return hashlib.sha256(" ".join(cell_key(o) for row in origins for o in row).encode()).hexdigest()[:8]


def load_cell(directory: Path, origin: dict) -> dict | None:
    """A finished cell's result, or None when it is missing, damaged or made from anything but `origin` (then
    it is computed again)."""
    return verified(directory / f"{cell_key(origin)}.json", origin)


def save_cell(directory: Path, origin: dict, result: dict) -> None:
    atomic_write_json(directory / f"{cell_key(origin)}.json", {**result, MADE_FROM: origin})


def optional_columns(results: list[dict], names: tuple[str, ...]) -> dict[str, float]:
    """Mean and sd over folds of figures not every cell has (a tier model's, the folds' teachers' comparisons);
    NaN where no cell holds one (the setting's head names no tier, the folds hold no comparison)."""
    columns = {}
    for name in names:
        values = np.array([r[name] for r in results if r.get(name) is not None], dtype=float)
        columns[f"{name}_mean"] = float(values.mean()) if len(values) else float("nan")
        columns[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return columns


def summarize(settings: list[dict], cells: list[list[dict]]) -> "pd.DataFrame":
    """One row per setting: mean and sample standard deviation over folds of accuracy and Kendall tau.

    `cells[i]` holds setting i's fold results. `within_1se` marks the settings whose mean accuracy is
    within one standard error of the best one's: choosing among them is choosing noise.
    """
    import pandas as pd

    records = []
    for setting, results in zip(settings, cells):
        accuracy = np.array([r["accuracy"] for r in results])
        tau = np.array([r["kendall_tau"] for r in results])
        records.append({"setting": setting_label(setting), **setting, "folds": len(results),
                        "accuracy_mean": accuracy.mean(), "accuracy_sd": accuracy.std(ddof=1),
                        "kendall_tau_mean": tau.mean(), "kendall_tau_sd": tau.std(ddof=1),
                        **optional_columns(results, ("exact_accuracy", "quadratic_kappa", "comparison_accuracy",
                                                     "comparison_accuracy_within_tier")),
                        "seconds_per_fold": float(np.mean([r["seconds"] for r in results]))})
    table = pd.DataFrame(records)
    best = int(table["accuracy_mean"].to_numpy().argmax())  # the first of equals: grid order breaks ties
    standard_error = table.loc[best, "accuracy_sd"] / np.sqrt(table.loc[best, "folds"])
    table["within_1se"] = table["accuracy_mean"] >= table.loc[best, "accuracy_mean"] - standard_error
    table["best"] = np.arange(len(table)) == best
    return table


def markdown_table(table: "pd.DataFrame") -> str:
    def tier(mean: float, sd: float) -> str:  # "-": the setting's head is not a tier model
        return "-" if np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}"

    judged = bool(table["comparison_accuracy_mean"].notna().any())
    lines = ["| setting | pairwise accuracy |" + (" comparison accuracy |" if judged else "") +
             " Kendall tau | exact tier | quadratic kappa | s per fold | |",
             "|---|---|" + ("---|" if judged else "") + "---|---|---|---|---|"]
    for row in table.itertuples():
        mark = "**best**" if row.best else "within 1 SE" if row.within_1se else ""
        comparison = f" {row.comparison_accuracy_mean:.3f} ± {row.comparison_accuracy_sd:.3f} |" if judged else ""
        lines.append(f"| {row.setting} | {row.accuracy_mean:.3f} ± {row.accuracy_sd:.3f} |{comparison} "
                     f"{row.kendall_tau_mean:.3f} ± {row.kendall_tau_sd:.3f} | "
                     f"{tier(row.exact_accuracy_mean, row.exact_accuracy_sd)} | "
                     f"{tier(row.quadratic_kappa_mean, row.quadratic_kappa_sd)} | "
                     f"{row.seconds_per_fold:.1f} | {mark} |")
    return "\n".join(lines) + "\n"


def write_results(table: "pd.DataFrame", directory: Path) -> None:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.6f")
    atomic_write_text(directory / "results.csv", buffer.getvalue())
    atomic_write_text(directory / "results.md", markdown_table(table))


def accuracy_figure(table: "pd.DataFrame", fold_accuracy: list[list[float]], path: str | os.PathLike, *,
                    title: str) -> Path:
    """One row per setting, best at the top: every fold's accuracy as a dot, the mean ± sd as a bar."""
    from matplotlib.figure import Figure

    from .figures import save_png

    order = np.argsort(-table["accuracy_mean"].to_numpy(), kind="stable")
    figure = Figure(figsize=(8, 1.2 + 0.38 * len(table)))
    ax = figure.subplots()
    for y, i in enumerate(order[::-1]):
        row = table.iloc[i]
        color = "#1a7f4b" if row["best"] else "#67a9cf" if row["within_1se"] else "0.45"
        ax.scatter(fold_accuracy[i], np.full(len(fold_accuracy[i]), y), s=16, color=color, alpha=0.6,
                   edgecolors="none")
        ax.errorbar(row["accuracy_mean"], y, xerr=row["accuracy_sd"], fmt="o", color=color, capsize=3, markersize=5)
    ax.set_yticks(range(len(table)), [table.iloc[i]["setting"] for i in order[::-1]], fontsize=8)
    ax.axvline(table["accuracy_mean"].max(), color="#1a7f4b", linewidth=0.8, linestyle=":")
    ax.set_xlabel("pairwise accuracy on the held-out fold (dots: folds; bar: mean ± sd)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return save_png(figure, path)
