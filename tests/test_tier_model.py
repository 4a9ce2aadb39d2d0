"""The tier model: its P(tier), its thresholds, its ordinal loss, its tier figures and its saved head, each
against a computation written out here."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from pipeline.config import Config, ConfigError, load_config
from pipeline.losses import in_batch_pair_loss, ordinal_loss_terms, split_objective, tier_objective
from pipeline.ordinal import is_tier_model, most_likely_tier, tier_probabilities, tier_table
from pipeline.selection import markdown_table, summarize
from pipeline.tier_head import TierThresholds
from pipeline.tier_metrics import confusion_counts, confusion_figures, tier_report
from pipeline.tier_sets import shown_set

RANK = {"C": 0, "B": 1, "A": 2, "S": 3}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def written_out(score: float, thresholds) -> dict[str, float]:
    """P(tier) of the cumulative link, one tier at a time: P(rank <= k) = sigmoid(t_k - score)."""
    below = [0.0] + [sigmoid(t - score) for t in thresholds] + [1.0]
    return {tier: below[rank + 1] - below[rank] for tier, rank in RANK.items()}


@pytest.mark.parametrize("score", [-4.0, -0.3, 0.0, 0.7, 6.0])
def test_tier_probabilities_are_the_cumulative_link_and_sum_to_one(score):
    thresholds = [-1.5, 0.2, 1.1]
    expected = written_out(score, thresholds)
    table = tier_table([score], thresholds)[0]
    assert list(table) == ["S", "A", "B", "C"]  # best first
    assert table == pytest.approx(expected, abs=1e-12)
    assert sum(table.values()) == pytest.approx(1.0, abs=1e-12)
    assert most_likely_tier(tier_probabilities([score], thresholds))[0] == max(expected, key=expected.get)


def test_a_higher_score_moves_probability_towards_s():
    p = tier_probabilities(np.linspace(-5, 5, 11), [-1.0, 0.0, 1.0])
    assert (np.diff(p[:, 3]) > 0).all() and (np.diff(p[:, 0]) < 0).all()


def test_thresholds_stay_ordered_under_steps_that_push_them_to_cross():
    cuts = TierThresholds()
    optimizer = torch.optim.SGD(cuts.parameters(), lr=5.0)
    for _ in range(300):
        t = cuts()
        (t[2] - t[0] + 3 * (t[1] - t[0])).backward()  # pulls the last and middle below the first
        optimizer.step()
        optimizer.zero_grad()
    t = cuts().detach().numpy()
    assert cuts.steps.detach().max() < -5  # the optimiser did push hard
    assert (np.diff(t) >= 0).all()
    p = tier_probabilities(np.linspace(-3, 3, 7), t)
    assert (p >= 0).all() and p.sum(axis=1) == pytest.approx(np.ones(7))


def test_thresholds_start_where_p_tier_is_the_tier_shares_for_the_mean_score():
    scores = torch.arange(10, dtype=torch.float32) - 20.0  # far from zero, as the norm head's scores
    ranks = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 3])  # C 0.2, B 0.3, A 0.4, S 0.1
    cuts = TierThresholds()
    cuts.place(scores, ranks)
    mean = float(scores.mean())
    assert cuts().detach().tolist() == pytest.approx([mean + math.log(q / (1 - q)) for q in (0.2, 0.5, 0.9)],
                                                     abs=1e-5)
    assert list(written_out(mean, cuts().detach().tolist()).values()) == pytest.approx([0.2, 0.3, 0.4, 0.1],
                                                                                        abs=1e-5)


def test_the_ordinal_loss_is_minus_the_log_of_the_written_out_probability():
    rng = np.random.default_rng(3)
    scores, ranks = rng.normal(scale=2.0, size=40), rng.integers(0, 4, size=40)
    thresholds = [-0.8, 0.1, 1.4]
    expected = [-math.log(written_out(s, thresholds)["CBAS"[r]]) for s, r in zip(scores, ranks)]
    got = ordinal_loss_terms(torch.tensor(scores), torch.tensor(ranks), torch.tensor(thresholds, dtype=torch.float64))
    assert got.tolist() == pytest.approx(expected, rel=1e-9)
    # far out, where sigmoid(a) - sigmoid(b) of two numbers near one would lose its digits
    far = ordinal_loss_terms(torch.tensor([30.0]), torch.tensor([0]), torch.tensor(thresholds, dtype=torch.float32))
    assert far.item() == pytest.approx(30.0 + 0.8, rel=1e-4)


def test_the_objective_is_the_ordinal_loss_alone_or_added_to_the_pair_loss_with_its_weight():
    rng = np.random.default_rng(5)
    scores, ranks = torch.tensor(rng.normal(size=24)), torch.tensor(rng.integers(0, 4, size=24))
    thresholds = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    ordinal = ordinal_loss_terms(scores, ranks, thresholds).mean().item()
    pair = in_batch_pair_loss(scores, ranks, 1.0, "logistic").item()
    assert tier_objective(scores, ranks, thresholds, loss="ordinal", margin=1.0, ordinal_weight=0.3).item() \
        == pytest.approx(ordinal)
    assert tier_objective(scores, ranks, thresholds, loss="logistic", margin=1.0, ordinal_weight=0.3).item() \
        == pytest.approx(pair + 0.3 * ordinal)
    assert tier_objective(scores, ranks, None, loss="logistic", margin=1.0, ordinal_weight=0.0).item() \
        == pytest.approx(pair)
    assert split_objective(scores, ranks, thresholds, loss="logistic", margin=1.0, ordinal_weight=0.3) \
        == pytest.approx(pair + 0.3 * ordinal)  # every pair of 24 images is one batch's pairs


def test_loss_ordinal_and_a_positive_ordinal_weight_make_a_tier_model_and_a_negative_weight_is_refused(tmp_path):
    assert not is_tier_model(Config())
    assert is_tier_model(Config(loss="ordinal")) and is_tier_model(Config(ordinal_weight=0.5))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"ordinal_weight": -1.0}))
    with pytest.raises(ConfigError, match="ordinal_weight"):
        load_config(path)


# ---------------------------------------------------------------- tier figures against hand counts

TRUE = ["S", "S", "A", "A", "A", "B", "B", "C", "C", "C"]
PREDICTED = ["S", "A", "A", "B", "C", "B", "S", "C", "B", "C"]


def test_confusion_exact_and_adjacent_are_the_hand_counts_and_kappa_is_sklearn_s():
    counts = confusion_counts(TRUE, PREDICTED)[0]
    assert counts.tolist() == [[1, 1, 0, 0],  # true S: one S, one A
                               [0, 1, 1, 1],  # true A
                               [1, 0, 1, 0],  # true B
                               [0, 0, 1, 2]]  # true C
    figures = {k: float(v[0]) for k, v in confusion_figures(confusion_counts(TRUE, PREDICTED)).items()}
    assert figures["exact_accuracy"] == pytest.approx(5 / 10)  # S, A, B, C, C
    assert figures["adjacent_accuracy"] == pytest.approx(8 / 10)  # all but A->C and B->S
    ranks = lambda tiers: [RANK[t] for t in tiers]  # noqa: E731
    assert figures["quadratic_kappa"] == pytest.approx(
        cohen_kappa_score(ranks(TRUE), ranks(PREDICTED), weights="quadratic"))


def test_the_tier_intervals_resample_artists_as_the_pairwise_one_does():
    rng = np.random.default_rng(0)
    artists = np.repeat([f"a{i}" for i in range(6)], 5)
    tiers = np.asarray(rng.choice(list("SABC"), size=30), dtype=object)
    scores = np.array([RANK[t] for t in tiers]) + rng.normal(scale=0.8, size=30)
    thresholds = [0.5, 1.5, 2.5]
    report = tier_report(scores, tiers, artists, thresholds, resamples=200, seed=7)
    predicted = most_likely_tier(tier_probabilities(scores, thresholds))
    names = np.unique(artists)
    draws = np.random.default_rng(7).integers(0, len(names), size=(200, len(names)))
    kappas, exact = [], []
    for draw in draws:  # each resample written out: every drawn artist's images, once per draw
        times = np.array([(names[draw] == a).sum() for a in artists])
        kappas.append(cohen_kappa_score([RANK[t] for t in tiers], [RANK[t] for t in predicted],
                                        weights="quadratic", sample_weight=times))
        exact.append(((tiers == predicted) * times).sum() / times.sum())
    assert report["quadratic_kappa_ci95"] == pytest.approx(np.quantile(kappas, [0.025, 0.975]).tolist())
    assert report["exact_accuracy_ci95"] == pytest.approx(np.quantile(exact, [0.025, 0.975]).tolist())
    assert report["exact_accuracy"] == pytest.approx(np.mean(tiers == predicted))


def test_crossval_reports_exact_accuracy_and_kappa_for_tier_settings_only():
    plain = [dict(accuracy=a, kendall_tau=0.5, seconds=1.0) for a in (0.7, 0.8)]
    tiered = [dict(accuracy=a, kendall_tau=0.5, seconds=1.0, exact_accuracy=e, quadratic_kappa=k)
              for a, e, k in ((0.6, 0.4, 0.5), (0.7, 0.6, 0.7))]
    table = summarize([{"loss": "margin"}, {"loss": "ordinal"}], [plain, tiered])
    assert math.isnan(table.exact_accuracy_mean[0]) and math.isnan(table.quadratic_kappa_mean[0])
    assert table.exact_accuracy_mean[1] == pytest.approx(0.5)
    assert table.quadratic_kappa_sd[1] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    rows = markdown_table(table).splitlines()
    assert "| - | - |" in rows[2] and "0.500 ± 0.141" in rows[3] and "0.600 ± 0.141" in rows[3]


# ---------------------------------------------------------------- saved heads

def saved_head(tmp_path, name: str, *, tier_model: bool, **meta_changes):
    from model import HEAD_FORMAT, RankingHead, save_head
    from pipeline.provenance import MADE_FROM

    head = RankingHead(input_dim=4, hidden_dim=4, proj_dim=2, tier_model=tier_model)
    meta = dict(format=HEAD_FORMAT, input_dim=4, hidden_dim=4, proj_dim=2, dropout=0.1, score_head="linear",
                tier_model=tier_model, image_size=56, **{MADE_FROM: {}}) | meta_changes
    save_head(head, tmp_path / name, {k: v for k, v in meta.items() if v is not None})
    return head, tmp_path / name


def test_a_tier_head_round_trips_its_thresholds(tmp_path):
    from model import load_head

    head, folder = saved_head(tmp_path, "tier", tier_model=True)
    with torch.no_grad():
        head.tier_thresholds.first.fill_(-2.5)
    from model import save_head
    save_head(head, folder, json.loads((folder / "head.json").read_text()))
    loaded, _ = load_head(folder, identity={"tier_model": True}, run={})
    assert loaded.thresholds().tolist() == pytest.approx(head.thresholds().tolist())
    assert loaded.thresholds()[0].item() == pytest.approx(-2.5)


def test_a_head_without_thresholds_is_refused_by_a_tier_model_config_in_one_line(tmp_path):
    from types import SimpleNamespace

    from model import head_identity, load_head
    from pipeline.errors import ArtrankError

    backbone = SimpleNamespace(id="weights", patch_size=14)
    tier_config = head_identity(Config(loss="ordinal"), backbone)  # what a tier-model config asks of a head
    assert tier_config["tier_model"] is True and head_identity(Config(), backbone)["tier_model"] is False
    _, plain = saved_head(tmp_path, "plain", tier_model=False,
                          **{k: v for k, v in tier_config.items() if k != "tier_model"})
    with pytest.raises(ArtrankError) as refusal:
        load_head(plain, identity=tier_config, run={})
    message = str(refusal.value)
    assert "\n" not in message and "head.json" in message and "tier_model=False" in message
    # a head of the format before tier models (no tier_model at all) is refused for its format
    _, old = saved_head(tmp_path, "old", tier_model=False, format=1)
    meta = json.loads((old / "head.json").read_text())
    meta.pop("tier_model")
    (old / "head.json").write_text(json.dumps(meta))
    with pytest.raises(ArtrankError, match=r"format 1, this code reads 2"):
        load_head(old, identity={"tier_model": True}, run={})


# ---------------------------------------------------------------- a trained tier model, end to end

@pytest.mark.slow
def test_a_tier_model_is_evaluated_exported_and_gives_the_same_p_tier_from_export_and_checkpoint(
        tmp_path, dataset, tiny_backbone):
    import pandas as pd
    from conftest import run_script, tiny_args
    from PIL import Image

    import artrank
    from pipeline.tables import TIERS

    args = tiny_args(tmp_path, dataset, tiny_backbone, loss="logistic", ordinal_weight=0.5)
    run_script("train.py", *args)
    shown = run_script("evaluate.py", *args).stdout
    run = tmp_path / "run"
    report = json.loads((run / "eval_test.json").read_text())
    tier = report["tier_model"]
    # the figures against a recomputation from the written scores and the checkpoint's thresholds
    scores = pd.read_csv(run / "scores_test.csv", keep_default_na=False)
    predicted = most_likely_tier(tier_probabilities(scores.score, tier["thresholds"]))
    assert tier["exact_accuracy"] == pytest.approx(float(np.mean(predicted == scores.tier.to_numpy())))
    assert tier["confusion"]["counts"] == [[int(((scores.tier == t) & (predicted == p)).sum()) for p in TIERS]
                                           for t in TIERS]
    for name in ("exact_accuracy", "adjacent_accuracy", "quadratic_kappa"):
        low, high = tier[f"{name}_ci95"]
        assert low <= tier[name] + 1e-9 and tier[name] <= high + 1e-9
    assert "tier model: exact tier" in shown
    assert "Tier model" in (run / "README.md").read_text()
    with Image.open(run / "figures" / "tier_confusion_test.png") as figure:
        assert figure.format == "PNG"

    run_script("export_onnx.py", *args, "--parity_images", "3", "--bench_seconds", "0")
    described = json.loads((run / "model.json").read_text())["tier_model"]
    assert described["thresholds"] == pytest.approx(tier["thresholds"], abs=1e-6)
    images = [str(dataset / name) for name in scores.file_name[:6]]
    exported, checkpoint = artrank.load(run, backend="onnx"), artrank.load(run, backend="torch")
    from_export = [exported.tier_probabilities(s) for s in exported.score(images)]
    from_checkpoint = [checkpoint.tier_probabilities(s) for s in checkpoint.score(images)]
    for a, b in zip(from_export, from_checkpoint):
        assert list(a) == ["S", "A", "B", "C"] and a == pytest.approx(b, abs=1e-4)
        assert sum(a.values()) == pytest.approx(1.0)
    comparison = exported.compare(images[0], images[1])
    assert comparison.p_tier_a == pytest.approx(from_export[0], abs=1e-6)
    assert comparison.tier_hint_a == max(from_export[0], key=from_export[0].get)  # its most likely tier
    # a tier model's tier sets read its own P(tier): the thresholds of model.json and of calibration.json agree
    sets = exported.calibration["tier_sets"]
    assert sets["method"] == "probability" and sets["thresholds"] == pytest.approx(exported.scorer.tier_thresholds)
    assert comparison.tier_set_a == checkpoint.tier_set(comparison.score_a)

    out = tmp_path / "predicted.csv"
    run_script("predict.py", *args, *images, "--out", out)
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["file_name", "score", "score_sd", "novelty", "tier_hint", "tier_set", "P(S)", "P(A)",
                                   "P(B)", "P(C)"]
    row = table.set_index("file_name").loc[images[0]]
    assert row["tier_set"] == shown_set(exported.tier_set(exported.score(images[0])))
    assert [row["P(S)"], row["P(A)"], row["P(B)"], row["P(C)"]] == pytest.approx(list(from_export[0].values()),
                                                                                   abs=1e-5)


def test_a_tier_model_s_hint_is_its_most_likely_tier_and_other_heads_keep_the_calibration_band():
    import artrank
    from pipeline.scoring import Scorer

    # bands that call every score above -10 an S, where the tier model's thresholds make 0.0 a B
    calibration = {"slope": 1.0, "tier_cuts": [{"above": "S", "below": "A", "threshold": -10.0}]}
    thresholds = [-2.0, 1.0, 3.0]
    tiered = artrank.Ranker(Scorer(score=None, image_size=56, patch_size=14, calibration=calibration,
                                   description="", tier_thresholds=thresholds))
    plain = artrank.Ranker(Scorer(score=None, image_size=56, patch_size=14, calibration=calibration,
                                  description=""))
    expected = written_out(0.0, thresholds)
    assert tiered.tier_probabilities(0.0) == pytest.approx(expected)
    assert tiered.tier_hint(0.0) == max(expected, key=expected.get) == "B"
    assert plain.tier_hint(0.0) == "S" and plain.tier_probabilities(0.0) is None
