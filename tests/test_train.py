"""train.py: frozen backbone, seeds, resume after a crash, stopping rules, processes, tracking."""

import json
import math
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import ROOT, run_script, tiny_args, write_dataset
from safetensors.torch import load_file

from pipeline.backbones import DinoFeatureExtractor
from pipeline.errors import ArtrankError
from pipeline.files import UMASK
from pipeline.provenance import run_origin

pytestmark = pytest.mark.slow


# Runs train.py in a fresh interpreter and sends itself `sig` at the start of batch number `at`
# (counted over the whole run), or when Accelerate's save_state is called for the `at`-th time.
CRASH = """
import os, signal, sys
sys.argv = ["train.py", *{args!r}]
sys.path.insert(0, {root!r})
import accelerate, model, train
calls = 0
def strike():
    global calls
    calls += 1
    if calls == {at}:
        os.kill(os.getpid(), signal.{sig})
if {where!r} == "batch":
    loss = model.tier_objective  # the batch loss train_epoch takes
    model.tier_objective = lambda *a, **k: (strike(), loss(*a, **k))[1]
else:
    save = accelerate.Accelerator.save_state
    def save_then_strike(self, *a, **k):
        result = save(self, *a, **k)
        strike()
        return result
    accelerate.Accelerator.save_state = save_then_strike
train.main()
"""


LAUNCH_TWO = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def run_with_crash(args: list[str], *, at: int, sig: str, where: str = "batch") -> int:

    code = CRASH.format(args=args, root=str(ROOT), at=at, sig=sig, where=where)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300).returncode


def outcome(run: Path) -> tuple[dict, list[str], dict]:
    metrics = json.loads((run / "final_metrics.json").read_text())
    log = (run / "train_log.jsonl").read_text().splitlines()
    return metrics, log, load_file(str(run / "checkpoints" / "best" / "head.safetensors"))


def assert_same_outcome(a: Path, b: Path) -> None:
    metrics_a, log_a, head_a = outcome(a)
    metrics_b, log_b, head_b = outcome(b)
    assert metrics_a == metrics_b
    assert log_a == log_b
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_backbone):
    """An uninterrupted 6-epoch run; batch 8 gives several batches per epoch. The backbone's weights as they
    were before it are kept beside it, in backbone_before.safetensors."""
    base = tmp_path_factory.mktemp("reference")
    args = tiny_args(base, write_dataset(base / "data"), tiny_backbone, epochs=6, batch_size=8, patience=100)
    shutil.copy(tiny_backbone / "model.safetensors", base / "backbone_before.safetensors")
    run_script("train.py", *args)
    return args, base / "run"


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, tiny_backbone):
    """A one-epoch run of write_dataset's folder: its output folder and what it printed."""
    base = tmp_path_factory.mktemp("one_epoch")
    result = run_script("train.py", *tiny_args(base, write_dataset(base / "data"), tiny_backbone, epochs=1))
    return base, result


def test_req_n_002_backbone_weights_never_change(reference, tiny_backbone):
    _, run = reference
    before = load_file(str(run.parent / "backbone_before.safetensors"))
    after = load_file(str(tiny_backbone / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    extractor = DinoFeatureExtractor.from_pretrained(str(tiny_backbone)).train()
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())  # REQ-U-001


def test_req_u_004_same_seed_same_metrics(tmp_path, reference):
    args, first = reference
    run_script("train.py", *args, "--output_dir", tmp_path / "again")  # features now come from the cache
    assert_same_outcome(first, tmp_path / "again")


def test_req_s_005_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, reference):
    args, uninterrupted = reference
    args = args + ["--output_dir", str(tmp_path / "killed")]
    assert run_with_crash(args, at=20, sig="SIGKILL") == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final_metrics.json").exists()
    run_script("train.py", *args, "--resume", "true")
    assert_same_outcome(uninterrupted, tmp_path / "killed")


def test_sigkill_between_state_write_and_rename_keeps_previous_state(tmp_path, reference):
    args, uninterrupted = reference
    args = args + ["--output_dir", str(tmp_path / "killed")]
    assert run_with_crash(args, at=3, sig="SIGKILL", where="save_state") == -signal.SIGKILL
    states = sorted(p.name for p in (tmp_path / "killed" / "state").iterdir())
    assert states == [".tmp-epoch0003-batch000000", "epoch0002-batch000000"]
    run_script("train.py", *args, "--resume", "true")
    assert_same_outcome(uninterrupted, tmp_path / "killed")


def test_ctrl_c_saves_mid_epoch_state_and_resume_skips_seen_batches(tmp_path, reference):
    args, uninterrupted = reference
    args = args + ["--output_dir", str(tmp_path / "stopped")]
    assert run_with_crash(args, at=11, sig="SIGINT") == 130
    (state,) = (tmp_path / "stopped" / "state").iterdir()
    epoch, batch = map(int, re.fullmatch(r"epoch(\d+)-batch(\d+)", state.name).groups())
    assert epoch == 1 and batch > 0  # several batches per epoch: stopped in the middle of epoch 1
    run_script("train.py", *args, "--resume", "true")
    assert_same_outcome(uninterrupted, tmp_path / "stopped")


def test_req_s_002_early_stop_when_val_loss_stalls(tmp_path, dataset, tiny_backbone):
    result = run_script("train.py", *tiny_args(tmp_path, dataset, tiny_backbone, epochs=40, patience=2, lr=3e-2))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    metrics = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    best_loss_epoch = min(range(len(log)), key=lambda i: log[i]["val/loss"])
    assert metrics["stop_reason"].startswith("early stop")
    assert len(log) == best_loss_epoch + 1 + 2 < 40
    # The console says which criterion each follows: the best marker val accuracy, patience val loss.
    assert ("best checkpoint: the epoch of highest val accuracy (the first of equals); early stop: 2 epochs "
            "without a lower val loss") in result.stdout
    marked = [int(line.split()[1]) for line in result.stdout.splitlines()
              if line.startswith("epoch ") and line.endswith(" | best val acc")]
    highest = [r["epoch"] for i, r in enumerate(log) if all(r["val/pairwise_acc"] > e["val/pairwise_acc"]
                                                            for e in log[:i])]
    assert marked == highest
    assert result.stdout.count('"backbone":') == 1  # the resolved config, once, at the start of the run


def test_req_s_003_stop_when_lr_below_min_lr(tmp_path, dataset, tiny_backbone):
    run_script("train.py", *tiny_args(tmp_path, dataset, tiny_backbone, epochs=10, lr=1e-3, min_lr=5e-4))
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    metrics = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    # cosine over 10 epochs: lr after epoch 5 is 1e-3 * (1 + cos(0.6 pi)) / 2 = 3.45e-4 < 5e-4
    assert len(log) == 6 and metrics["stop_reason"].startswith("learning rate")


def test_req_e_005_n_005_best_checkpoint_is_saved_from_a_validated_best_epoch(tmp_path, reference):
    _, run = reference
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    head = json.loads((run / "checkpoints" / "best" / "head.json").read_text())
    best = max(log, key=lambda r: (r["val/pairwise_acc"], -r["epoch"]))
    assert head["epoch"] == best["epoch"] and head["val_pairwise_acc"] == best["val/pairwise_acc"]
    top = sorted(p.name for p in (run / "checkpoints" / "top").iterdir())
    # REQ-O-005: the 3 best by validation accuracy, the earlier of equals, never simply the newest
    best_three = sorted(log, key=lambda r: (-r["val/pairwise_acc"], r["epoch"]))[:3]
    assert top == sorted(f"epoch{r['epoch']:04d}" for r in best_three)
    for r in best_three:
        saved = json.loads((run / "checkpoints" / "top" / f"epoch{r['epoch']:04d}" / "head.json").read_text())
        assert saved["val_pairwise_acc"] == r["val/pairwise_acc"]
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert set(metrics) >= {"train/pairwise_acc", "val/pairwise_acc", "test/pairwise_acc"}  # REQ-E-006
    assert metrics["val/pairwise_acc"] == pytest.approx(head["val_pairwise_acc"])


def test_req_e_004_o_002_every_epoch_validates_under_a_cosine_schedule(reference):
    _, run = reference
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(6))
    assert all(0 <= r["val/pairwise_acc"] <= 1 and r["val/loss"] >= 0 for r in log)
    # the rate each epoch trained with: epoch 0 at the full lr
    expected = [1e-3 * (1 + math.cos(math.pi * epoch / 6)) / 2 for epoch in range(6)]
    assert [r["lr"] for r in log] == pytest.approx(expected, abs=1e-12)


def test_req_o_001_gradient_accumulation_steps_the_optimizer_every_k_batches(tmp_path, reference):
    args, run = reference
    train_images = (run / "splits.csv").read_text().count(",train\n")
    batches = 2 * math.ceil(train_images / 8)
    for k in (1, 2):
        out = tmp_path / f"accumulate{k}"
        run_script("train.py", *args, "--output_dir", out, "--epochs", "2", "--grad_accum_steps", k)
        (state,) = (out / "state").iterdir()
        steps = torch.load(state / "optimizer.bin", weights_only=True)["state"][0]["step"]
        assert int(steps) == batches // k


def test_req_u_002_without_cuda_fp16_is_off_and_the_run_says_so(one_epoch):
    base, result = one_epoch
    assert "no CUDA device, so fp16 mixed precision is off" in result.stdout
    (cache,) = (base / "cache").glob("features-*")
    assert json.loads((cache / "cache.json").read_text())["key"]["precision"] == "no"


def test_req_u_003_o_003_one_offline_wandb_run_holds_config_metrics_and_sample_pairs(reference):
    _, run = reference
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (record,) = runs[0].glob("run-*.wandb")
    payload = record.read_bytes()
    for needle in (b"wandb_project", b"margin", b"val/pairwise_acc", b"test/pairwise_acc", b"val/sample_pairs"):
        assert needle in payload, needle


def test_two_processes_train_and_evaluate_exactly_like_one(tmp_path, reference):
    args, run = reference
    # accelerate launch gives each process one thread; so does the one-process run (the reference, as every
    # script the tests start), since the thread count changes float summation order and Adam amplifies
    # last-bit differences of tiny gradients.
    shutil.copytree(run, tmp_path / "one", ignore=shutil.ignore_patterns("wandb"))
    run_script("train.py", *args, "--output_dir", tmp_path / "two", launcher=LAUNCH_TWO)
    assert_same_outcome(tmp_path / "one", tmp_path / "two")
    run_script("evaluate.py", *args, "--output_dir", tmp_path / "one", env={"OMP_NUM_THREADS": "1"})
    run_script("evaluate.py", *args, "--output_dir", tmp_path / "two", launcher=LAUNCH_TWO)
    one, two = (json.loads((tmp_path / run / "eval_test.json").read_text()) for run in ("one", "two"))
    for key in ("pairwise_accuracy", "n_pairs", "n_images", "kendall_tau", "spearman", "ci95", "per_tier_pair",
                "pairwise_accuracy_by_split"):
        assert one[key] == two[key], key


def test_two_processes_extract_every_image_once(tmp_path, tiny_backbone):

    from pipeline.features import read_cache

    data = write_dataset(tmp_path / "data", artists=11, per_artist=9)  # 99 images: shards of unequal size
    for processes, cache in ((1, "one"), (2, "two")):
        run_script("train.py", *tiny_args(tmp_path, data, tiny_backbone, epochs=1, cache_dir=tmp_path / cache,
                                          output_dir=tmp_path / f"run{processes}"),
                   launcher=LAUNCH_TWO if processes == 2 else None)
    (one,), (two,) = (list((tmp_path / name).glob("features-*")) for name in ("one", "two"))
    assert one.name == two.name  # same key: same backbone, size, preprocessing, precision
    Accelerator(cpu=True)
    index_one, cls_one, mean_one, problem_one = read_cache(one, json.loads((one / "cache.json").read_text())["key"])
    index_two, cls_two, mean_two, problem_two = read_cache(two, json.loads((two / "cache.json").read_text())["key"])
    assert problem_one is problem_two is None
    assert sorted(index_one) == sorted(index_two) and len(index_one) == 99
    order = [index_two[h] for h in sorted(index_one, key=index_one.get)]
    torch.testing.assert_close(torch.from_numpy(cls_two[order]), torch.from_numpy(cls_one), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(mean_two[order]), torch.from_numpy(mean_one), atol=1e-5, rtol=1e-4)


def test_checkpoint_from_another_image_size_is_refused(tmp_path, reference):

    _, run = reference
    from model import load_head

    with pytest.raises(ArtrankError, match="image_size=56.*image_size=768"):
        load_head(run / "checkpoints" / "best", identity={"image_size": 768}, run=run_origin(run))


def test_a_run_says_where_it_is_tracked_writes_its_card_and_readable_checkpoints(one_epoch):
    tmp_path, result = one_epoch
    lines = result.stdout.splitlines()
    start = next(line for line in lines if line.startswith("wandb: "))
    run_dir = Path(re.search(r"run written to (\S+);", start).group(1))
    assert start == f"wandb: offline (asked for): run written to {run_dir}; upload with: wandb sync {run_dir}"
    assert run_dir.parent == tmp_path / "run" / "wandb" and run_dir.is_dir()
    assert lines[-1] == f"wandb: offline run in {run_dir}; upload it with: wandb sync {run_dir}"
    assert (tmp_path / "run" / "README.md").read_text().startswith("---\nlibrary_name: artrank\n")
    for folder in ("checkpoints", "state"):
        for path in (tmp_path / "run" / folder).rglob("*.*"):
            assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK, path
