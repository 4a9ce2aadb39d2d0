"""First contact: the commands a new user types, the config's refusals, tracking, tier hints, the model card."""

import itertools
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, run_script, tiny_args

import tracking
from config import Config, ConfigError, load_config, parse_config
from metrics import fit_calibration, fit_tier_cuts, tier_hint
from modelcard import model_card, results_section, write_model_card
from runfolder import UMASK


def write_config(tmp_path: Path, payload) -> str:
    path = tmp_path / "config.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def only_error_line(result) -> str:
    """The command failed with one `error:` line, last on stderr, and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or ": error:" in line]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-5:]
    return errors[0]


# ---------------------------------------------------------------- flags and --help

@pytest.mark.parametrize("argv, expected", [(["--resume"], True), (["--resume", "false"], False),
                                            (["--resume", "true"], True), (["--resume=no"], False), ([], False)])
def test_boolean_flags_alone_mean_true_and_still_take_a_value(tmp_path, argv, expected):
    cfg, _ = parse_config("", ["--config", write_config(tmp_path, {}), *argv])
    assert cfg.resume is expected


def test_hf_style_names_are_config_keys(tmp_path):
    cfg, _ = parse_config("", ["--config", write_config(tmp_path, {}), "--overwrite_output_dir",
                               "--resume_from_checkpoint", "runs/x/state/epoch0003-batch000000"])
    assert cfg.overwrite_output_dir is True and cfg.resume_from_checkpoint == "runs/x/state/epoch0003-batch000000"


def script_help(script: str, monkeypatch, capsys) -> str:
    """`python SCRIPT --help`, in process: the script's own parse_config call builds it."""
    module = __import__(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"]) if script in ("predict", "export_onnx") else module.main()
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("script, shown, hidden", [
    ("make_pairs", ["--data_dir", "--val_fraction", "--seed"], ["--lr", "--bootstrap", "--backbone", "--epochs"]),
    ("predict", ["--output_dir", "--torch", "--checkpoint"], ["--bootstrap", "--lr", "--epochs", "--val_fraction"]),
    ("evaluate", ["--split {train,val,test}", "--feature {cls,cls_mean}", "--bootstrap"], ["--lr", "--epochs"]),
    ("train", ["--lr", "--resume [true|false]", "--score_head {linear,norm}"], ["--bootstrap", "--split"]),
    ("export_onnx", ["--fp16", "--checkpoint", "--image_size"], ["--lr", "--bootstrap", "--epochs"]),
])
def test_each_script_help_lists_only_its_keys_with_choices(script, shown, hidden, monkeypatch, capsys):
    text = script_help(script, monkeypatch, capsys)
    for flag in shown:
        assert flag in text, flag
    for flag in hidden:
        assert not re.search(rf"{flag}\b", text), flag


def test_help_shows_the_config_files_values_not_the_dataclass_defaults(monkeypatch, capsys):
    text = " ".join(script_help("train", monkeypatch, capsys).split())
    baseline = json.loads((ROOT / "configs/baseline.json").read_text())
    assert Config.data_dir != baseline["data_dir"]  # the case the issue found
    assert f'(default: "{baseline["data_dir"]}")' in text
    assert "(default: configs/baseline.json)" in text


@pytest.mark.slow
def test_a_key_the_script_does_not_use_is_refused_in_one_line():
    result = run_script("make_pairs.py", "--lr", "0.1", check=False)
    assert result.returncode == 2 and "unrecognized arguments: --lr 0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- config values checked at parse time

@pytest.mark.parametrize("values, message", [
    ({"batch_size": 1}, "'batch_size' must be >= 2"),
    ({"epochs": 0}, "'epochs' must be >= 1"),
    ({"lr": 0}, "'lr' must be > 0"),
    ({"lr": float("nan")}, "'lr' must be a finite number"),
    ({"val_fraction": 0.15}, "'val_fraction' must be a whole tenth"),
    ({"val_fraction": 0.5, "test_fraction": 0.4}, "must leave at least 0.2 to train on"),
    ({"test_fraction": 0.0}, "'test_fraction' must be from 0.1 to 0.8"),
    ({"dropout": 1.0}, "'dropout' must be >= 0 and < 1"),
    ({"num_workers": -2}, "'num_workers' must be from -1 (one per CPU core) to 256"),
    ({"margin": 0}, "'margin' must be > 0"),
    ({"hidden_dim": 0}, "'hidden_dim' must be >= 1"),
    ({"extract_batch_size": 0}, "'extract_batch_size' must be >= 1"),
    ({"seed": -1}, "'seed' must be from 0"),
    ({"image_size": 10, "random_backbone": "tiny"}, "smaller than one patch of the backbone (14 px)"),
    ({"epochs": True}, "'epochs' must be int, got True"),  # a bool is not an int
    ({"output_dir": " "}, "'output_dir' must not be empty"),
])
def test_config_values_out_of_range_are_refused_naming_the_key(tmp_path, values, message):
    path = write_config(tmp_path, values)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
    with pytest.raises(SystemExit, match=re.escape(message)):  # the scripts: one line, no traceback
        parse_config("", ["--config", path])


def test_image_size_is_checked_against_a_local_backbones_patch_size(tmp_path, tiny_backbone):
    with pytest.raises(ConfigError, match=re.escape("image_size' 13 is smaller than one patch")):
        load_config(write_config(tmp_path, {"backbone": str(tiny_backbone), "image_size": 13}))
    assert load_config(write_config(tmp_path, {"backbone": str(tiny_backbone), "image_size": 14})).image_size == 14


@pytest.mark.parametrize("argv, message", [(["--batch_size", "1"], "'batch_size' must be >= 2"),
                                           (["--dropout", "-0.1"], "'dropout' must be >= 0"),
                                           (["--epochs", "true"], "invalid")])
def test_flag_values_out_of_range_are_refused_in_one_line(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_config("", ["--config", write_config(tmp_path, {}), *argv])
    err = capsys.readouterr().err
    assert message in err and argv[0] in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("payload", ["[1, 2]", '"lr"', "3", "null"])
def test_a_config_file_must_be_a_json_object(tmp_path, payload):
    with pytest.raises(ConfigError, match="a config file is a JSON object"):
        load_config(write_config(tmp_path, payload))


def test_library_config_errors_are_value_errors_not_exits(tmp_path):
    with pytest.raises(ValueError):
        load_config(write_config(tmp_path, {"lr": -1}))
    with pytest.raises(ValueError):
        load_config(tmp_path / "missing.json")


# ---------------------------------------------------------------- the bare commands from a fresh clone

@pytest.fixture
def fresh_clone(tmp_path) -> Path:
    """The root of a fresh clone as far as the scripts can tell: configs/, no runs/, data/ or models/."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


@pytest.mark.slow
def test_bare_predict_without_a_trained_run_says_what_to_do_in_one_line(fresh_clone):
    line = only_error_line(run_script("predict.py", "drawing.png", cwd=fresh_clone, check=False))
    assert "no ONNX model at runs/baseline/model.onnx" in line and "export_onnx.py" in line
    assert not (fresh_clone / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["export_onnx.py", "evaluate.py"])
def test_bare_commands_without_a_trained_run_answer_in_one_line(fresh_clone, script):
    # The intended commands after training; with no trained run each says so, before any hub lookup.
    line = only_error_line(run_script(script, cwd=fresh_clone, check=False, timeout=120))
    assert "runs/baseline" in line


@pytest.mark.slow
def test_bare_train_without_data_answers_in_one_line(fresh_clone):
    line = only_error_line(run_script("train.py", cwd=fresh_clone, check=False, timeout=120))
    assert "data/my_drawings" in line


def test_wandb_disabled_is_refused_with_the_reason(tmp_path, monkeypatch):
    for name, value in (("WANDB_MODE", "disabled"), ("WANDB_MODE", "dryrun"), ("WANDB_DISABLED", "true")):
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit, match=f"{name}={value}: every run is tracked \\(REQ-N-004\\)"):
            parse_config("", ["--config", write_config(tmp_path, {})], keys=("run", "tracking"))
        monkeypatch.delenv("WANDB_DISABLED", raising=False)


# ---------------------------------------------------------------- tracking: says where, never hangs

def test_offline_without_credentials_and_online_when_asked_and_reachable(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "has_wandb_credentials", lambda: False)
    assert tracking.choose_mode("") == ("offline", "no wandb credentials: set WANDB_API_KEY or run `wandb login`")
    assert tracking.choose_mode("offline") == ("offline", "asked for")
    with socket.create_server(("127.0.0.1", 0)) as server:  # a local stand-in for the wandb server
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert tracking.choose_mode("online") == ("online", "asked for")
        monkeypatch.setenv("WANDB_MODE", "online")
        assert tracking.choose_mode("")[0] == "online"


def test_a_key_without_a_reachable_server_falls_back_to_offline_quickly(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    # The port is closed now: connecting is refused at once, as it is on a machine without network.
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.monotonic()
    mode, why = tracking.choose_mode("")
    assert (mode, why) == ("offline", f"127.0.0.1 did not answer within {tracking.PROBE_SECONDS:.0f} s")
    assert time.monotonic() - start < tracking.PROBE_SECONDS + 1


def test_start_tracking_says_where_the_offline_run_goes_and_how_to_upload_it(tmp_path, monkeypatch, capsys):
    registered = []
    monkeypatch.setattr(tracking.atexit, "register", lambda *args, **kwargs: registered.append(args))
    run_dir = tmp_path / "wandb" / "offline-run-20260101_000000-abc"

    class FakeAccelerator:  # the real one starts a wandb process; this checks what we say about it
        is_main_process = True

        def init_trackers(self, project, config, init_kwargs):
            self.init_kwargs = init_kwargs["wandb"]

        def get_tracker(self, name, unwrap):
            return type("Run", (), {"dir": str(run_dir / "files"), "url": None})()

        def print(self, *args):
            print(*args)

    accelerator = FakeAccelerator()
    cfg = Config(output_dir=str(tmp_path), wandb_mode="offline")
    mode = tracking.start_tracking(accelerator, cfg, job_type="train")
    assert mode == "offline" and accelerator.init_kwargs["mode"] == "offline"
    assert capsys.readouterr().out == (f"wandb: offline (asked for): run written to {run_dir}; "
                                       f"upload with: wandb sync {run_dir}\n")
    [(_, message)] = [args for args in registered if args[0] is print]  # importing wandb registers its own
    assert message == f"wandb: offline run in {run_dir}; upload it with: wandb sync {run_dir}"


# ---------------------------------------------------------------- tier hints

def test_every_tier_is_hinted_when_the_medians_are_out_of_order():
    # The demo's validation scores: medians S 2.35, A 1.33, B 1.54, C 1.65. Midpoints of medians never say B.
    rng = np.random.default_rng(0)
    medians = {"S": 2.35, "A": 1.33, "B": 1.54, "C": 1.65}
    tiers = np.repeat(list("SABC"), 15)
    scores = np.concatenate([medians[t] + rng.normal(0, 0.4, 15) for t in "SABC"])
    calibration = fit_calibration(scores, tiers)
    thresholds = [cut["threshold"] for cut in calibration["tier_cuts"]]
    assert [(c["above"], c["below"]) for c in calibration["tier_cuts"]] == [("S", "A"), ("A", "B"), ("B", "C")]
    assert thresholds == sorted(thresholds, reverse=True) and len(set(thresholds)) == 3
    hints = [tier_hint(s, calibration) for s in scores]
    assert set(hints) == set("SABC")
    assert calibration["tier_hint_agreement"] == pytest.approx(np.mean(np.array(hints) == tiers))
    assert calibration["tier_hint_agreement"] > 0.25  # better than hinting one tier for all


def brute_force_agreement(scores, tiers, present) -> float | None:
    distinct = np.unique(scores)
    best = None
    for cuts in itertools.combinations(((distinct[1:] + distinct[:-1]) / 2)[::-1], len(present) - 1):
        calibration = {"tier_cuts": [{"above": a, "below": b, "threshold": t}
                                     for a, b, t in zip(present, present[1:], cuts)]}
        hints = [tier_hint(s, calibration) for s in scores]
        if set(hints) == set(present):
            agreement = float(np.mean(np.array(hints) == tiers))
            best = agreement if best is None else max(best, agreement)
    return best


def test_tier_cuts_are_the_ordered_thresholds_with_the_most_agreement():
    rng = np.random.default_rng(1)
    for trial in range(120):
        n = int(rng.integers(3, 11))
        tiers = rng.choice(list("SABC"), n)
        scores = rng.integers(0, 5, n).astype(float) if trial % 2 else rng.normal(size=n)  # ties half the time
        present = [t for t in "SABC" if t in tiers]
        cuts, agreement = fit_tier_cuts(scores, tiers)
        expected = brute_force_agreement(scores, tiers, present) if len(present) > 1 else None
        if expected is None:
            assert cuts == [] and agreement is None
            continue
        hints = [tier_hint(s, {"tier_cuts": cuts}) for s in scores]
        assert set(hints) == set(present)
        assert agreement == pytest.approx(expected) == pytest.approx(np.mean(np.array(hints) == tiers))


# ---------------------------------------------------------------- model card and file modes

def fake_run(out: Path, *, random_backbone: str = "", with_eval: bool = True) -> Path:
    """A run folder holding the files train.py and evaluate.py write, with known figures."""
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(vars(Config(output_dir=str(out), data_dir="data/demo",
                                                            random_backbone=random_backbone))))
    (out / "final_metrics.json").write_text(json.dumps({
        "stop_reason": "early stop: val loss not improved for 10 epochs", "epochs_run": 41, "best_epoch": 31,
        "train/pairwise_acc": 0.70, "val/pairwise_acc": 0.63, "test/pairwise_acc": 0.7356}))
    rows = ["image_id,file_name,tier,artist,split"] + [
        f"i{k},images/i{k}.png,{'SABC'[k % 4]},artist{k // 10},{('train', 'val', 'test')[min(2, k // 80)]}"
        for k in range(100)]
    (out / "splits.csv").write_text("\n".join(rows) + "\n")
    (out / "calibration.json").write_text(json.dumps({"slope": 2.5, "pairs": 1347, "tier_cuts": [
        {"above": "S", "below": "A", "threshold": 2.0}, {"above": "A", "below": "B", "threshold": 1.5},
        {"above": "B", "below": "C", "threshold": 1.2}]}))
    if with_eval:
        (out / "eval_test.json").write_text(json.dumps({
            "split": "test", "pairwise_accuracy": 0.7356, "n_pairs": 1339, "n_images": 60, "n_artists": 6,
            "kendall_tau": 0.41, "spearman": 0.52, "ci95": [0.60, 0.85], "ensemble": False,
            "pairwise_accuracy_by_split": {"train": 0.70, "val": 0.63, "test": 0.7356},
            "per_tier_pair": {"S-A": 0.69, "B-C": 0.76}, "per_tier_pair_n_pairs": {"S-A": 272, "B-C": 176}}))
    return out


def test_model_card_has_the_hugging_face_layout_and_the_runs_figures(tmp_path):
    out = fake_run(tmp_path / "run")
    path = write_model_card(out)
    text = path.read_text()
    assert path == out / "README.md" and text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["library_name"] == "artrank"
    metrics = {(m["type"], m["name"]): m["value"] for r in header["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics[("pairwise_accuracy", "test pairwise accuracy")] == 0.7356
    assert metrics[("kendall_tau", "test Kendall tau-b")] == 0.41
    assert "| test (60 images, 6 artists, 1,339 pairs), 95% CI [0.600, 0.850] | **0.7356** | >= 0.60 | PASS |" in text
    assert "| val | **0.6300** | >= 0.62 | PASS |" in text and "| train | **0.7000** | <= 0.80 | PASS |" in text
    assert "| S-A | 0.690 | 272 |" in text and "| B-C | 0.760 | 176 |" in text
    assert "| train | 20 | 20 | 20 | 20 | 80 | 8 |" in text  # the data summary from splits.csv
    assert "best validation epoch was 31" in text and "artrank.load(" in text and "predict.py" in text
    assert "backbone of this run is random" not in text
    assert (path.stat().st_mode & 0o777) == 0o666 & ~UMASK


def test_model_card_says_a_random_backbone_is_random(tmp_path):
    text = model_card(fake_run(tmp_path / "run", random_backbone="tiny"))
    assert "**The backbone of this run is random**" in text


def test_model_card_of_a_run_not_yet_evaluated_uses_the_final_metrics(tmp_path):
    text = results_section(fake_run(tmp_path / "run", with_eval=False))
    assert "| test | **0.7356** | >= 0.60 | PASS |" in text and "tier pair" not in text


def test_checkpoints_are_readable_by_others_like_any_file(tmp_path):
    from model import RankingHead, save_head

    save_head(RankingHead(input_dim=8, hidden_dim=4, proj_dim=4), tmp_path / "best", {"format": 1})
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "best").iterdir()}
    assert modes == {"head.safetensors": 0o666 & ~UMASK, "head.json": 0o666 & ~UMASK}


# ---------------------------------------------------------------- the repository documents itself

def test_no_file_cites_a_file_the_repository_lacks():
    tracked = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md") and ".venv" not in p.parts
               and "runs" not in p.parts and p.name != "test_first_contact.py"]
    citing = [str(p.relative_to(ROOT)) for p in tracked if "NOTES.md" in p.read_text(errors="ignore")]
    assert citing == []
    sections = re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "design.md").read_text(), re.MULTILINE)
    assert sections == [str(n) for n in range(1, 11)]


def test_readme_commands_use_the_flags_as_they_are():
    readme = (ROOT / "README.md").read_text()
    assert "--resume true" not in readme and "--skip_bad_images true" not in readme
    assert os.path.exists(ROOT / "docs" / "design.md") and "docs/design.md" in readme


@pytest.mark.slow
def test_a_run_says_where_it_is_tracked_writes_its_card_and_readable_checkpoints(tmp_path, dataset, tiny_backbone):
    result = run_script("train.py", *tiny_args(tmp_path, dataset, tiny_backbone, epochs=1))
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
