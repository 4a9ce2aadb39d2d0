"""review.py: the label audit and the next pairs, from fold heads that never saw the artist they judge."""

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_run

import model
import review
from pipeline.files import atomic_write_text
from pipeline.label_audit import AUDIT_COLUMNS
from pipeline.next_pairs import PAIR_COLUMNS, PER_IMAGE, answer_information, candidate_pairs, choose_pairs, reason
from pipeline.out_of_fold import FoldHeads, fold_parts
from pipeline.tables import TIER_RANK


def run_review(*argv) -> tuple[int | str | None, str]:
    """review.main in this process: its exit code (None when it returned) and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            review.main([str(a) for a in argv])
        except SystemExit as end:
            return end.code, out.getvalue()
    return None, out.getvalue()


@pytest.fixture(scope="module")
def reviewed(exported, tmp_path_factory):
    """A copy of the trained tiny run, audited and asked for pairs, every atomic write of review.py recorded."""
    run = copy_run(exported, tmp_path_factory.mktemp("reviewed"), with_export=False)
    written = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review, "atomic_write_text", lambda path, text: (written.append(path),
                                                                        atomic_write_text(path, text)))
        audit = run_review("audit", "--output_dir", run, "--review_folds", 3)
        pairs = run_review("pairs", "--output_dir", run, "--review_folds", 3, "--n", 12)
    return dict(run=run, audit=audit, pairs=pairs, written=written, splits=pd.read_csv(run / "splits.csv"),
                data=exported["data"])


@pytest.mark.slow
def test_the_audit_ranks_every_train_and_val_work_once_most_doubtful_first(reviewed):
    assert reviewed["audit"][0] is None, reviewed["audit"]
    run, splits = reviewed["run"], reviewed["splits"]
    table = pd.read_csv(run / "review" / "label_audit.csv", keep_default_na=False)
    assert tuple(table.columns[:len(AUDIT_COLUMNS)]) == AUDIT_COLUMNS
    assert sorted(table["file_name"]) == sorted(splits.file_name[splits.split != "test"])
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert (np.diff(table["doubt"].astype(float)) <= 0).all()
    assert set(table["split"]) <= {"train", "val"} and (table[["p_S", "p_A", "p_B", "p_C"]] == "").all().all()
    given = splits.set_index("file_name").tier
    assert (table["tier"] == table["file_name"].map(given)).all()
    assert (run / "review" / "label_audit.png").stat().st_size > 1000
    assert "review" in json.loads((run / "run.json").read_text())["files"]  # --overwrite_output_dir removes it


@pytest.mark.slow
def test_next_pairs_stay_in_one_split_of_train_or_val_and_are_written_atomically(reviewed):
    assert reviewed["pairs"][0] is None, reviewed["pairs"]
    run, splits = reviewed["run"], reviewed["splits"].set_index("file_name")
    chosen = pd.read_csv(run / "review" / "next_pairs.csv")
    assert tuple(chosen.columns[:len(PAIR_COLUMNS)]) == PAIR_COLUMNS and 0 < len(chosen) <= 12
    assert (chosen["image_a"].map(splits.split) == chosen["split"]).all()
    assert (chosen["image_b"].map(splits.split) == chosen["split"]).all()
    assert set(chosen["split"]) <= {"train", "val"}
    assert chosen["p_a_better"].between(0, 1).all() and (chosen["spread"] >= 0).all()
    assert reviewed["written"] == [run / "review" / "label_audit.csv", run / "review" / "next_pairs.csv"]


@pytest.mark.slow
def test_refusals_are_one_line_and_write_nothing(reviewed, tmp_path):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    code, _ = run_review("audit", "--output_dir", untrained)
    assert str(code).startswith("error: no trained run in") and not (untrained / "review").exists()
    run = shutil.copytree(reviewed["run"], tmp_path / "run")
    before = (run / "review" / "label_audit.csv").read_bytes()
    code, _ = run_review("audit", "--output_dir", run, "--backbone", tmp_path / "no-such-backbone")
    assert str(code).startswith("error: ") and "no-such-backbone" in str(code) and "\n" not in str(code)
    assert (run / "review" / "label_audit.csv").read_bytes() == before  # the old audit stands
    code, _ = run_review("pairs", "--output_dir", run, "--n", 0)
    assert code == 2
    # Judgements added since training are a new run's: the fold heads would learn from data the run has not.
    data = shutil.copytree(reviewed["data"], tmp_path / "data")
    names = list(reviewed["splits"].file_name[reviewed["splits"].split == "train"][:2])
    (data / "comparisons.csv").write_text(f"image_a,image_b,winner,rater\n{names[0]},{names[1]},a,x\n")
    code, _ = run_review("pairs", "--output_dir", run, "--data_dir", data)
    assert "the comparisons file differs from this run's" in str(code) and "\n" not in str(code)


def test_the_page_is_a_command_of_review_py_and_starts_only_on_a_trained_run(tmp_path, monkeypatch):
    code, printed = run_review("app", "--help")
    assert code == 0 and "--port" in printed and "--rater" in printed
    code, _ = run_review("app", "--output_dir", tmp_path)
    assert str(code).startswith("error: no trained run in") and "\n" not in str(code)
    code, printed = run_review("--help")
    assert code == 0 and "{audit,pairs,app}" in printed


# ---------------------------------------------------------------- the fold heads never saw the artist they judge

class FoldScorer(torch.nn.Module):
    """A head whose score of a row is a number of its own: the fold it was fitted as."""

    def __init__(self, fold: int):
        super().__init__()
        self.fold = torch.nn.Parameter(torch.tensor(float(fold)))

    def forward(self, x):
        return self.fold.detach().expand(len(x)).clone()

    def thresholds(self):
        return None


def works(artists: int = 12, per_artist: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tiers = [t for _ in range(artists) for t in rng.permutation(list("SABC"))[:per_artist]]
    return pd.DataFrame(dict(image_id=[f"w{i:03d}" for i in range(len(tiers))], file_name=[
        f"images/w{i:03d}.png" for i in range(len(tiers))], tier=tiers, artist=[
        f"artist{i // per_artist:02d}" for i in range(len(tiers))], split=["train"] * len(tiers)))


def test_each_work_is_scored_by_the_head_that_never_saw_its_artist(monkeypatch):
    from pipeline.comparisons import no_comparisons
    from pipeline.config import Config

    rows, fitted = works(), []

    def recording_fit_head(cfg, fit_x, fit_tiers, stop_x, stop_tiers, comparisons=None):
        fitted.append(set(fit_x[:, 0].int().tolist()) | set(stop_x[:, 0].int().tolist()))
        return FoldScorer(len(fitted) - 1), 0, 1

    monkeypatch.setattr(model, "fit_head", recording_fit_head)
    features = torch.arange(len(rows), dtype=torch.float32)[:, None]
    heads = model.fold_heads(Config(), features, rows, no_comparisons(), folds=4)
    artists = rows["artist"].to_numpy()
    own = heads.out_of_fold()
    for i in range(len(rows)):
        head = int(own[i])  # the score names the head
        assert head == heads.fold_of[i]
        seen = {artists[j] for j in fitted[head]}
        assert artists[i] not in seen, (i, artists[i])
    for fold, (fit, stop) in enumerate(fold_parts(heads.fold_of, 4)):
        assert not set(fit) & set(stop) and set(heads.fold_of[stop]) == {(fold + 1) % 4}


# ---------------------------------------------------------------- which pairs next

def pair_rows() -> tuple[pd.DataFrame, FoldHeads]:
    rows = works(artists=9, per_artist=4, seed=1)
    rows["split"] = np.where(rows["artist"] < "artist03", "val", np.where(rows["artist"] < "artist06", "test",
                                                                          "train"))
    rng = np.random.default_rng(2)
    heads = FoldHeads(fold_of=np.zeros(len(rows), np.int64), scores=rng.normal(0, 1, (3, len(rows))),
                      thresholds=[None] * 3, calibrations=[{"slope": 2.0}] * 3)
    return rows, heads


def test_candidates_never_cross_splits_never_touch_test_and_never_repeat_a_judged_pair():
    rows, _ = pair_rows()
    judged = pd.DataFrame(dict(image_a=["w001", "w030"], image_b=["w000", "w029"]))
    a, b = candidate_pairs(rows, judged)
    splits, ranks = rows["split"].to_numpy(), np.array([TIER_RANK[t] for t in rows["tier"]])
    assert len(a) and (splits[a] == splits[b]).all() and set(splits[a]) == {"train", "val"}
    assert (np.abs(ranks[a] - ranks[b]) <= 1).all() and (ranks[a] >= ranks[b]).all()
    pairs = {frozenset(p) for p in zip(rows.image_id[a], rows.image_id[b])}
    assert not pairs & {frozenset(p) for p in zip(judged.image_a, judged.image_b)}
    ids = rows["image_id"].to_numpy()
    expected = {frozenset((ids[i], ids[j])) for i in range(len(rows)) for j in range(i + 1, len(rows))
                if splits[i] == splits[j] != "test" and abs(ranks[i] - ranks[j]) <= 1}
    assert pairs == expected - {frozenset(p) for p in zip(judged.image_a, judged.image_b)}
    assert len(pairs) == len(a) and len(expected) > len(pairs)  # a judged pair was among them


def information_by_hand(p: np.ndarray) -> np.ndarray:
    """The mutual information between a yes/no answer and equally likely heads of P(yes) p (heads x pairs)."""
    def entropy(q):
        return -(q * np.log(q) + (1 - q) * np.log(1 - q))
    return entropy(p.mean(axis=0)) - entropy(p).mean(axis=0)


def test_pairs_are_the_most_informative_first_with_the_heads_mean_and_spread_and_the_caps():
    rows, heads = pair_rows()
    no_judged = pd.DataFrame(dict(image_a=[], image_b=[]))
    chosen = choose_pairs(rows, heads, no_judged, 10)
    assert len(chosen) == 10 and tuple(chosen.columns[:len(PAIR_COLUMNS)]) == PAIR_COLUMNS
    index = {name: i for i, name in enumerate(rows["file_name"])}
    a, b = chosen.image_a.map(index).to_numpy(), chosen.image_b.map(index).to_numpy()
    p = 1 / (1 + np.exp(-2.0 * (heads.scores[:, a] - heads.scores[:, b])))
    assert np.allclose(chosen["p_a_better"], p.mean(axis=0)) and np.allclose(chosen["spread"], p.std(axis=0))
    assert (np.diff(chosen["value"]) <= 1e-12).all()
    assert np.allclose(chosen["value"], information_by_hand(p))
    uses = pd.Series(np.concatenate([a, b])).value_counts()
    assert uses.max() <= PER_IMAGE
    # the first pair is the most valuable of every candidate
    ca, cb = candidate_pairs(rows, no_judged)
    pc = 1 / (1 + np.exp(-2.0 * (heads.scores[:, ca] - heads.scores[:, cb])))
    assert chosen["value"].iloc[0] == pytest.approx(information_by_hand(pc).max())


def test_an_answer_the_heads_agree_on_is_worth_nothing_however_unsure_and_sure_heads_that_split_most():
    p = np.array([[0.5, 0.55, 0.9, 0.99, 0.7],
                  [0.5, 0.45, 0.1, 0.01, 0.7],
                  [0.5, 0.50, 0.5, 0.50, 0.7]])
    value = answer_information(p)
    assert value[0] == pytest.approx(0.0, abs=1e-12) and value[4] == pytest.approx(0.0, abs=1e-12)
    assert value[1] < value[2] < value[3] < np.log(2)
    assert np.allclose(value, information_by_hand(p))
    assert "the heads split on it" in reason("A", "B", p[:, 2]) and "0.10 to 0.90" in reason("A", "B", p[:, 2])
    assert "against the tiers" in reason("A", "B", np.array([0.2, 0.3, 0.4]))
    assert "all lean to image_a" in reason("A", "A", p[:, 4])


def test_one_work_the_heads_disagree_on_fills_no_more_than_its_share_of_the_pairs():
    rows, heads = pair_rows()
    heads.scores[:] = heads.scores[0]  # the heads agree on every work but one: only that work's pairs are worth asking
    heads.scores[:, 30] = [6.0, -6.0, 6.0]  # a train work the heads disagree on wholly
    chosen = choose_pairs(rows, heads, pd.DataFrame(dict(image_a=[], image_b=[])), 10)
    name = rows["file_name"][30]
    assert chosen.iloc[0][["image_a", "image_b"]].tolist().count(name) == 1
    assert ((chosen["image_a"] == name) | (chosen["image_b"] == name)).sum() == PER_IMAGE
