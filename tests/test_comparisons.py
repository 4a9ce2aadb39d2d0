"""Teachers' comparisons (pipeline/comparisons.py, comparison_metrics.py, losses.comparison_loss): the file's
checks, the split and the test-leak guard (REQ-N-001), the loss with ties and rater weights, the evaluation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPLIT, write_dataset

from data import DataError, check_no_test_leak, comparison_table, image_table, split_rows
from pipeline.comparison_metrics import comparison_accuracy, rater_agreement
from pipeline.comparisons import comparisons_per_step, index_pairs, rater_weights, split_counts
from pipeline.losses import comparison_loss
from pipeline.tables import frame


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A small data set, its table (as a DataFrame too) and two images of each split."""
    data = write_dataset(tmp_path_factory.mktemp("judged") / "data", artists=12, per_artist=4)
    table, _ = image_table(data, **SPLIT)
    rows = frame(table)
    names = {s: list(rows.loc[rows.split == s, "file_name"][:2]) for s in ("train", "val", "test")}
    return data, table, rows, names


def write(data, *lines: str) -> None:
    (data / "comparisons.csv").write_text("\n".join(lines) + "\n")


def test_every_bad_comparison_row_is_named_at_once_and_skipped_on_request(judged):
    data, table, _, names = judged
    (t1, t2), (v1, _) = names["train"], names["val"]
    write(data, "Image A, image-b ,WINNER,Rater", f"{t1},{t2},a,x", f"{t1},images/nope.png,a,x", f"{t1},{t1},tie,x",
          f"{t1},{t2},best,x", f"{t2},{t1},a,x", f"{t1},{v1},b,x,extra", f"{t2},{t1},b,y")
    with pytest.raises(DataError) as err:
        comparison_table(data, table, skip_bad_images=False)
    message = str(err.value)
    assert "6 bad row(s)" in message
    otherwise = "rater 'x' judged this pair otherwise at line(s)"
    for line, what in ((3, "unknown image 'images/nope.png'"), (4, "an image compared with itself"),
                       (5, "winner 'best'"), (2, f"{otherwise} 6"), (6, f"{otherwise} 2"),
                       (7, "5 fields but the header has 4")):
        assert f"line {line}: {what}" in message, (line, message)
    kept, notes = comparison_table(data, table, skip_bad_images=True)
    assert list(kept["line"]) == [8] and len(notes) == 6  # y's judgement (the same as x's first) stands


def test_a_comparison_belongs_to_the_split_of_its_images_and_a_crossing_one_to_none(judged):
    data, table, rows, names = judged
    (t1, t2), (v1, v2), (s1, s2) = names["train"], names["val"], names["test"]
    write(data, "image_a,image_b,winner,rater", f"{t1},{t2},a,x", f"{t1},{t2},tie,y", f"{v1},{v2},b,",
          f"{s1},{s2},a,x", f"{t1},{s1},a,x", f"{v1},{t2},b,y")
    comparisons, _ = comparison_table(data, table, skip_bad_images=False)
    assert list(comparisons["split"]) == ["train", "train", "val", "test", "crossing", "crossing"]
    tiers = dict(zip(rows.image_id, rows.tier))
    same = [tiers[a] == tiers[b] for a, b in zip(comparisons.image_a, comparisons.image_b)]
    counts = split_counts(comparisons, tiers)
    assert counts.loc["train", "ties"] == 1 and counts.loc["train", "raters"] == 2
    assert counts.loc["crossing"].to_dict() == dict(across_tiers=2 - sum(same[4:]), within_tier=sum(same[4:]), ties=0,
                                                    raters=2)
    assert counts.loc["val", "raters"] == 1  # an empty rater is one rater
    # What training takes: the comparisons among the training images only; the crossing one is not there.
    train_ids = list(split_rows(table, "train")["image_id"])
    used = index_pairs(comparisons, train_ids, "pooled")
    assert len(used["a"]) == 2 and {train_ids[i] for i in np.concatenate([used["a"], used["b"]])} <= set(train_ids)


def test_req_n_001_a_comparison_with_a_test_image_never_reaches_training_or_validation(judged):
    data, table, _, names = judged
    (t1, t2), (s1, _) = names["train"], names["test"]
    write(data, "image_a,image_b,winner", f"{t1},{t2},a", f"{t1},{s1},a")
    comparisons, _ = comparison_table(data, table, skip_bad_images=False)
    train = split_rows(table, "train")
    check_no_test_leak(train, table, comparisons[comparisons.split == "train"])
    with pytest.raises(DataError, match="test data would reach training or validation: 1 test row"):
        check_no_test_leak(train, table, comparisons)  # the crossing pair names a test image
    assert s1 not in set(frame(split_rows(table, "train"))["file_name"])


def test_comparison_loss_with_ties_and_rater_weights_against_a_hand_computation():
    score_a, score_b = torch.tensor([2.0, 0.5, 1.0, -1.0]), torch.tensor([1.0, 1.5, 0.2, 1.5])
    outcome = torch.tensor([1.0, -1.0, 0.0, 0.0])
    weights = rater_weights(np.array(["x", "x", "x", "y"], dtype=object), "equal")
    assert list(weights) == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0])  # x's three and y's one weigh 2 each
    assert list(rater_weights(np.array(["x", "y"], dtype=object), "pooled")) == [1.0, 1.0]
    w = torch.tensor(weights, dtype=torch.float32)

    def softplus(v):
        return math.log1p(math.exp(v))
    logistic = [softplus(-1.0), softplus(-1.0), 0.5 * (softplus(-0.8) + softplus(0.8)),
                0.5 * (softplus(2.5) + softplus(-2.5))]
    margin = [max(0, 1 - 1.0), max(0, 1 - 1.0), max(0, 0.8 - 1), max(0, 2.5 - 1)]
    # The tier model's loss has no pair loss of its own: its comparisons are the logistic ones.
    for loss, terms in (("logistic", logistic), ("margin", margin), ("ordinal", logistic)):
        expected = sum(wi * t for wi, t in zip(weights, terms)) / 4
        assert comparison_loss(score_a, score_b, outcome, w, 1.0, loss).item() == pytest.approx(expected, rel=1e-5)
    # A tie is least at an equal score under both rules.
    tie = torch.tensor([0.0])
    assert comparison_loss(torch.tensor([0.3]), torch.tensor([0.3]), tie, torch.ones(1), 1.0, "logistic").item() \
        == pytest.approx(math.log(2))


def test_every_training_comparison_is_taken_once_an_epoch_in_an_order_of_seed_and_epoch_alone():
    shares = comparisons_per_step(50, 7, seed=3, epoch=2)
    assert len(shares) == 7 and sorted(np.concatenate(shares)) == list(range(50))
    again = comparisons_per_step(50, 7, seed=3, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(shares, again))  # a resume at any step takes the same
    assert not np.array_equal(np.concatenate(shares), np.concatenate(comparisons_per_step(50, 7, seed=3, epoch=3)))


def test_comparison_weight_adds_the_comparison_gradient_to_the_tier_pairs():
    from accelerate import Accelerator

    from model import Progress, RankingHead, train_epoch

    x, ranks = torch.randn(8, 4), torch.tensor([3, 2, 1, 0, 3, 2, 1, 0])
    judged = dict(a=np.array([0, 1]), b=np.array([2, 3]), outcome=np.array([-1.0, 0.0], np.float32),
                  weight=np.ones(2, np.float32))

    def trained(weight: float):
        torch.manual_seed(0)
        head = RankingHead(input_dim=4, hidden_dim=4, proj_dim=2, dropout=0.0)
        optimizer = torch.optim.SGD(head.parameters(), lr=1.0)
        train_epoch(Accelerator(cpu=True), head, optimizer, x, ranks, Progress(), batch_size=8, margin=1.0,
                    loss="logistic", ordinal_weight=0.0, seed=0, comparisons=judged, comparison_weight=weight)
        return head, torch.cat([p.detach().flatten() for p in head.parameters()])

    torch.manual_seed(0)
    start = RankingHead(input_dim=4, hidden_dim=4, proj_dim=2, dropout=0.0)
    scores = start(x)
    from pipeline.losses import in_batch_pair_loss
    total = in_batch_pair_loss(scores, ranks, 1.0, "logistic") + 0.5 * comparison_loss(
        scores[[0, 1]], scores[[2, 3]], torch.tensor([-1.0, 0.0]), torch.ones(2), 1.0, "logistic")
    total.backward()
    expected = torch.cat([(p.detach() - p.grad).flatten() for p in start.parameters()])
    _, with_half = trained(0.5)
    assert torch.allclose(with_half, expected, atol=1e-5)
    _, alone = trained(0.0)
    assert not torch.allclose(alone, expected, atol=1e-5)


def test_comparison_accuracy_per_rater_within_tier_and_rater_agreement_against_hand_counts():
    comparisons = pd.DataFrame({
        "image_a": ["p", "p", "q", "r", "p", "s", "q", "r"], "image_b": ["q", "q", "r", "s", "s", "p", "s", "s"],
        "winner": ["a", "b", "a", "tie", "a", "b", "b", "a"], "rater": ["x", "y", "x", "x", "y", "z", "y", "z"],
        "split": "test"})
    scores = dict(p=3.0, q=2.0, r=1.0, s=0.0)
    tiers, artists = dict(p="S", q="S", r="A", s="A"), dict(p="m", q="n", r="m", s="n")
    report = comparison_accuracy(scores, comparisons, tiers, artists, resamples=200, seed=0)
    # Wins: p>q right, q>p wrong, q>r right, (tie left out), p>s right, p>s (as b of s,p) right, s>q wrong,
    # r>s right.
    assert (report["accuracy"], report["n_comparisons"], report["n_ties"]) == (pytest.approx(5 / 7), 7, 1)
    assert report["per_rater"] == {"x": 1.0, "y": pytest.approx(1 / 3), "z": 1.0}
    assert report["per_rater_n"] == {"x": 2, "y": 3, "z": 2}
    # Within one tier: p-q twice (one right) and r-s by z (right); x's tie on r-s is left out.
    assert (report["within_tier"], report["within_tier_n"]) == (pytest.approx(2 / 3), 3)
    low, high = report["ci95"]
    assert 0 <= low <= high <= 1
    # Agreement: p-q by x and y (disagree), p-s by y and z (agree); r-s: x's tie is no verdict. One of two.
    assert rater_agreement(comparisons) == dict(agreement=0.5, n_rater_pairs=2, n_image_pairs=2)


def test_a_changed_comparisons_file_is_another_run_s_data(judged, tmp_path):
    from pipeline.runs import RunFolderError, check_same_data, write_record

    _, table, _, _ = judged
    write_record(tmp_path, config={}, table=table, stage="pairs", comparisons_sha256="first")
    check_same_data(tmp_path, table, comparisons_sha256="first")
    with pytest.raises(RunFolderError, match="the comparisons file differs from this run's"):
        check_same_data(tmp_path, table, comparisons_sha256="second")


def test_the_demo_s_teachers_err_as_often_as_their_stated_noise_and_half_judge_within_one_student(tmp_path):
    from pipeline.demo_data import RATERS, TIE_GAP, write_comparisons

    rng = np.random.default_rng(0)
    q, artists = rng.random(400), [f"s{i % 40}" for i in range(400)]
    names = [f"w{i}" for i in range(400)]
    tiers = ["S" if v > 0.68 else "A" if v > 0.5 else "B" if v > 0.32 else "C" for v in q]
    write_comparisons(tmp_path, names, tiers, artists, q, seed=1)
    rows = pd.read_csv(tmp_path / "comparisons.csv")
    quality, artist = dict(zip(names, q)), dict(zip(names, artists))
    gap = rows.image_a.map(quality) - rows.image_b.map(quality)
    assert ((gap.abs() < TIE_GAP) == (rows.winner == "tie")).all()
    wins = rows[rows.winner != "tie"]
    wrong = (gap[wins.index] > 0) != (wins.winner == "a")
    for rater, noise in RATERS.items():
        errors = wrong[wins.rater == rater]
        assert abs(errors.mean() - noise) < 3 * math.sqrt(noise * (1 - noise) / len(errors)) + 0.01, rater
    same_student = (rows.image_a.map(artist) == rows.image_b.map(artist)).mean()
    assert 0.4 < same_student < 0.6


def test_the_comparison_table_is_read_back_only_with_the_comparisons_file_it_was_made_from(judged, tmp_path):
    from data import comparisons_dataset, comparisons_digest, read_comparisons
    from pipeline.errors import ArtrankError
    from pipeline.runs import write_record

    data, table, _, names = judged
    write(data, "image_a,image_b,winner,rater", f"{names['train'][0]},{names['train'][1]},a,x")
    comparisons, _ = comparison_table(data, table, skip_bad_images=False)
    write_record(tmp_path, config={}, table=table, stage="pairs", comparisons_sha256=comparisons_digest(data))
    comparisons_dataset(comparisons, table, data).save_to_disk(str(tmp_path / "comparisons"))
    assert read_comparisons(tmp_path)["winner"] == ["a"]
    write(data, "image_a,image_b,winner,rater", f"{names['train'][0]},{names['train'][1]},b,x")
    write_record(tmp_path, config={}, table=table, stage="pairs", comparisons_sha256=comparisons_digest(data))
    with pytest.raises(ArtrankError):
        read_comparisons(tmp_path)  # made from the first file, the run now records the second


def test_a_comparisons_file_beside_a_dataset_file_is_refused_not_ignored(tmp_path):
    from pipeline.comparisons import comparisons_path

    (tmp_path / "works.parquet").write_bytes(b"")
    assert comparisons_path(str(tmp_path / "works.parquet")) is None
    (tmp_path / "comparisons.csv").write_text("image_a,image_b,winner\n")
    assert comparisons_path(str(tmp_path)) == tmp_path / "comparisons.csv"
    with pytest.raises(DataError, match="comparisons are read from a data folder, not beside a dataset file"):
        comparisons_path(str(tmp_path / "works.parquet"))
