"""pipeline/config.py: one declaration per key, and the flags, --help, checks and roles that follow from it."""

import json
import re
import sys

import pytest
from conftest import COMMAND_OF, ROOT, run_script, write_config

from pipeline.arguments import parse_config, script_keys
from pipeline.config import KEYS, REVIEW, SCRIPTS, SEARCHABLE, Config, ConfigError, identity, load_config


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
    argv = [*COMMAND_OF.get(script, []), "--help"]
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
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
    with pytest.raises(ConfigError, match=re.escape(message)):  # the scripts print it as one line (test_cli)
        parse_config("", ["--config", path])


def test_image_size_is_checked_against_a_local_backbones_patch_size(tmp_path, tiny_backbone):
    with pytest.raises(ConfigError, match=re.escape("image_size' 13 is smaller than one patch")):
        load_config(write_config(tmp_path, {"backbone": str(tiny_backbone), "image_size": 13}))
    assert load_config(write_config(tmp_path, {"backbone": str(tiny_backbone), "image_size": 14})).image_size == 14


@pytest.mark.parametrize("argv, message", [(["--batch_size", "1"], "'batch_size' must be >= 2"),
                                           (["--dropout", "-0.1"], "'dropout' must be >= 0"),
                                           (["--epochs", "true"], "int expected, got 'true'"),
                                           (["--epochs", "1.5"], "int expected, got '1.5'")])
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


def test_overrides_beat_the_file_and_the_file_beats_the_defaults(tmp_path):
    cfg, _ = parse_config("", ["--config", write_config(tmp_path, {"lr": 0.5, "epochs": 7}), "--lr", "0.25"])
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.25, 7, Config.batch_size)


@pytest.mark.parametrize("values, argv, message", [
    ({"learning_rate": 0.1}, [], "unknown key 'learning_rate'"),
    ({"epochs": "ten"}, [], "key 'epochs' must be int"),
    ({"seed": None}, [], "key 'seed' must be int"),  # REQ-N-003: no run without a seed
    ({"resume": 1}, [], "key 'resume' must be bool"),
    ({"score_head": "mlp"}, [], "must be one of"),
])
def test_bad_config_files_are_refused_naming_the_key(tmp_path, values, argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config("", ["--config", write_config(tmp_path, values), *argv])


@pytest.mark.parametrize("argv", [["--epochs", "ten"], ["--no_such_key", "1"], ["--wandb_mode", "disabled"],
                                  ["--resume", "maybe"]])
def test_bad_overrides_are_refused(tmp_path, argv, capsys):
    # REQ-N-004: wandb cannot be switched off, only online or offline.
    with pytest.raises(SystemExit):
        parse_config("", ["--config", write_config(tmp_path, {}), *argv])
    assert argv[0] in capsys.readouterr().err


def test_baseline_config_holds_the_spec_values():
    cfg, _ = parse_config("", ["--config", "configs/baseline.json"])
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.patience, cfg.margin, cfg.seed) == (
        32, 1e-4, 0.01, 100, 10, 1.0, 42)
    assert (cfg.image_size, cfg.mixed_precision, cfg.backbone) == (768, "fp16", "facebook/dinov2-large")  # REQ-U-002


@pytest.mark.parametrize("key, value", [("epochs", True), ("batch_size", False), ("patience", True),
                                        ("seed", True), ("lr", True), ("margin", False)])
def test_a_bool_is_refused_for_a_number_key(tmp_path, key, value):
    """JSON true is 1 to Python: `"epochs": true` would silently train one epoch."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({key: value}))
    with pytest.raises(ConfigError, match=key):
        parse_config("", ["--config", str(config)])


@pytest.mark.parametrize("argv", [["--epochs", "true"], ["--seed", "false"], ["--batch_size", "1.5"]])
def test_a_bool_or_fraction_is_refused_for_an_int_override(tmp_path, argv, capsys):
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(SystemExit):
        parse_config("", ["--config", str(config), *argv])
    assert argv[0] in capsys.readouterr().err


def test_loss_key_is_a_config_choice(tmp_path):
    config = tmp_path / "c.json"
    config.write_text("{}")
    cfg, _ = parse_config("", ["--config", str(config), "--loss", "logistic"])
    assert cfg.loss == "logistic" and Config().loss == "margin"
    with pytest.raises(SystemExit):
        parse_config("", ["--config", str(config), "--loss", "hinge"])


# ---------------------------------------------------------------- one declaration per key, and what follows from it

def test_every_key_declares_its_role_its_scripts_and_its_help():
    roles = {"split", "features", "head", "training", "checkpoints", "runtime"}
    for name, declared in KEYS.items():
        assert declared.role in roles and declared.help, name
        assert declared.scripts and set(declared.scripts) <= set(SCRIPTS) | {REVIEW}, name
    # only what changes nothing upstream of the cached features may be swept
    assert all(KEYS[name].role in ("features", "head", "training") for name in SEARCHABLE)
    assert not {"image_size", "mixed_precision", "seed", "backbone", "top_k"} & set(SEARCHABLE)


def test_a_run_s_identity_is_every_key_but_the_runtime_ones():
    config = vars(Config())
    assert set(identity(config)) == {name for name, declared in KEYS.items() if declared.role != "runtime"}
    assert "epochs" in identity(config)  # the cosine schedule's length: more epochs is another run
    assert not {"output_dir", "data_dir", "num_workers", "wandb_mode", "resume"} & set(identity(config))
    assert set(identity(config, "split")) == {"val_fraction", "test_fraction", "seed"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_takes_as_flags_exactly_the_keys_that_declare_it(script, monkeypatch, capsys):
    text = script_help(script, monkeypatch, capsys)
    flags = set(re.findall(r"^  --(\w+)", text, re.MULTILINE)) - {"config"}
    own = {"help", "fp16", "parity_images", "latency_batch", "bench_seconds", "dir", "out", "compare", "model",
           "torch", "top", "folds", "grid", "push_to_hub", "license", "provider", "n"}
    assert flags - own == set(script_keys(script))


# ---------------------------------------------------------------- a run folder is enough

def recorded_run(tmp_path, **values) -> str:
    """A run folder whose config.json records `values` over the defaults, as train.py writes it."""
    run = tmp_path / "run"
    run.mkdir()
    recorded = vars(Config()) | dict(output_dir=str(run), **values)
    (run / "config.json").write_text(json.dumps(recorded))
    return str(run)


@pytest.mark.parametrize("script, how", [("evaluate", "positional"), ("export_onnx", "positional"),
                                         ("crossval", "positional"), ("evaluate", "--output_dir"),
                                         ("predict", "--output_dir")])
def test_a_run_folder_gives_every_key_of_a_script_that_reads_a_run(tmp_path, monkeypatch, script, how):
    run = recorded_run(tmp_path, image_size=64, feature="cls_mean", data_dir="/data/mine", backbone="/models/b")
    monkeypatch.chdir(tmp_path)  # no configs/ here: nothing comes from the caller's folder
    cfg, _ = parse_config("", [run] if how == "positional" else ["--output_dir", run], script=script)
    assert (cfg.image_size, cfg.feature, cfg.backbone, cfg.output_dir) == (64, "cls_mean", "/models/b", run)
    if script != "predict":
        assert cfg.data_dir == "/data/mine"


def test_a_key_given_again_must_agree_with_the_run_s_and_a_runtime_key_may_change(tmp_path):
    run = recorded_run(tmp_path, image_size=64)
    assert parse_config("", [run, "--image_size", "64"], script="evaluate")[0].image_size == 64
    cfg, _ = parse_config("", [run, "--split", "val", "--bootstrap", "7"], script="evaluate")
    assert (cfg.split, cfg.bootstrap, cfg.image_size) == ("val", 7, 64)
    with pytest.raises(ConfigError, match=r"key 'image_size' is 224 but the run in .* has 64"):
        parse_config("", [run, "--image_size", "224"], script="evaluate")
    other = write_config(tmp_path, {"seed": 7, "data_dir": "/moved/data"})
    with pytest.raises(ConfigError, match=r"key 'seed' is 7 but the run"):
        parse_config("", ["--config", other, "--output_dir", run], script="export_onnx")
    moved = write_config(tmp_path, {"image_size": 64, "data_dir": "/moved/data"})
    assert parse_config("", ["--config", moved, run], script="evaluate")[0].data_dir == "/moved/data"


def test_a_folder_that_holds_no_run_and_two_run_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"empty: not a run folder \(no config.json\)"):
        parse_config("", [str(tmp_path / "empty")], script="evaluate")
    run = recorded_run(tmp_path)
    with pytest.raises(ConfigError, match="two run folders"):
        parse_config("", [run, "--output_dir", str(tmp_path / "other")], script="evaluate")


def test_without_config_the_repository_s_baseline_is_the_default_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    baseline = json.loads((ROOT / "configs/baseline.json").read_text())
    cfg, args = parse_config("", ["a.png"], script="predict", add_arguments=lambda p: p.add_argument("images",
                                                                                                      nargs="*"))
    assert (cfg.data_dir, cfg.output_dir, args.images) == (baseline["data_dir"], baseline["output_dir"], ["a.png"])


def test_a_run_records_local_paths_absolute_and_hub_ids_as_they_are(tmp_path, monkeypatch):
    from pipeline.config import save_config

    (tmp_path / "work" / "drawings").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    cfg = Config(data_dir="drawings", cache_dir="cache", output_dir="runs/mine", backbone="facebook/dinov2-large")
    save_config(cfg, tmp_path / "config.json")
    recorded = json.loads((tmp_path / "config.json").read_text())
    work = tmp_path / "work"
    assert (recorded["data_dir"], recorded["cache_dir"], recorded["output_dir"]) == (
        str(work / "drawings"), str(work / "cache"), str(work / "runs" / "mine"))
    assert recorded["backbone"] == "facebook/dinov2-large" and recorded["checkpoint"] == ""


@pytest.mark.parametrize("argv, hint", [
    (["--learning_rate", "1e-4"], "--learning_rate is Hugging Face's name: here it is --lr"),
    (["--num_train_epochs", "3"], "--num_train_epochs is Hugging Face's name: here it is --epochs"),
    (["--per_device_train_batch_size", "8"],
     "--per_device_train_batch_size is Hugging Face's name: here it is --batch_size"),
    (["--bf16"], "--bf16 is Hugging Face's name: here it is --mixed_precision bf16"),
    (["--bootstrap", "5"], "--bootstrap is a key of evaluate.py, not of this script"),
    (["--weight_decy", "0.1"], "did you mean --weight_decay?"),
])
def test_an_unknown_flag_gets_our_name_for_it(tmp_path, argv, hint, capsys):
    with pytest.raises(SystemExit):
        parse_config("", ["--config", write_config(tmp_path, {}), *argv], script="train")
    error = capsys.readouterr().err
    assert f"unrecognized arguments: {' '.join(argv)}; {hint}" in error and len(error.strip().splitlines()) == 1


def test_a_value_of_the_wrong_type_names_the_type_expected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_config("", ["--config", write_config(tmp_path, {}), "--epochs", "1.5"], script="train")
    assert "argument --epochs: int expected, got '1.5'" in capsys.readouterr().err
