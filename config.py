"""One Config for every script: JSON file first, then `--key value` overrides.

    python train.py --config configs/demo.json --lr 3e-4 --epochs 5 --resume

Every field below is a key of the JSON files in configs/; each script takes the keys it uses as flags
(its `--help` lists them with the values of the config file). A boolean flag alone means true
(`--resume`), and `--resume false` also works. An unknown key, a value of the wrong type (a bool is not
an int) or out of range is refused at parse time with one line that names the key.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from runfolder import atomic_write_text
from tracking import TrackingError, requested_mode


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file or flag and the key."""


def _key(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # data
    data_dir: str = _key("data/demo", "folder with metadata.csv and the images")
    output_dir: str = _key("runs/baseline", "the run folder")
    cache_dir: str = _key("cache", "feature cache, shared between runs")
    demo_data: bool = _key(False, "generate the synthetic demo data set into data_dir when it is missing")
    skip_bad_images: bool = _key(False, "drop bad rows with a warning instead of refusing to start")
    val_fraction: float = _key(0.1, "share of the artists held out for validation (whole tenths)")
    test_fraction: float = _key(0.1, "share of the artists held out for the test (whole tenths)")
    # backbone and preprocessing
    backbone: str = _key("facebook/dinov2-large", "hub id or local directory")
    random_backbone: str = _key("", "build a random DINOv2 of this architecture into `backbone` when missing")
    image_size: int = _key(768, "long side of the letterboxed image (REQ-U-005)")
    feature: str = _key("cls", "cls (spec) or cls_mean (CLS + mean patch token)")
    extract_batch_size: int = _key(32, "images per backbone batch")
    num_workers: int = _key(-1, "DataLoader processes decoding images; -1: one per CPU core (per process)")
    # head
    hidden_dim: int = _key(512, "projector hidden width")
    proj_dim: int = _key(256, "projector output width")
    dropout: float = _key(0.1, "projector dropout")
    score_head: str = _key("linear", "linear, or norm (the spec's -||emb||)")
    # training
    batch_size: int = _key(32, "images per step; the loss takes every cross-tier pair among them")
    grad_accum_steps: int = _key(1, "batches per optimiser step")
    lr: float = _key(1e-4, "AdamW learning rate")
    weight_decay: float = _key(0.01, "AdamW weight decay")
    epochs: int = _key(100, "epochs, also the length of the cosine schedule")
    patience: int = _key(10, "epochs without a better val loss before early stopping")
    min_lr: float = _key(1e-6, "stop when the learning rate falls below this")
    margin: float = _key(1.0, "margin of the ranking loss")
    loss: str = _key("margin", "margin (the spec's MarginRankingLoss) or logistic (RankNet; ignores margin)")
    seed: int = _key(42, "seed of the split, the head and the bootstrap (REQ-U-004)")
    mixed_precision: str = _key("fp16", "used on CUDA; CPU runs fp32 (Accelerate has no CPU fp16)")
    top_k: int = _key(3, "best checkpoints kept for ensembles (REQ-O-005)")
    resume: bool = _key(False, "continue the run in output_dir from its latest saved state")
    resume_from_checkpoint: str = _key("", "continue from this saved state folder (output_dir/state/epoch...)")
    overwrite_output_dir: bool = _key(False, "a fresh run into a folder holding another run deletes that run")
    wandb_project: str = _key("artrank", "wandb project")
    wandb_mode: str = _key("", "online or offline; empty: online when wandb credentials exist (REQ-N-004)")
    sample_pairs: int = _key(16, "val pairs shown with their images in the tracker (REQ-O-003)")
    # evaluation
    split: str = _key("test", "split to evaluate")
    checkpoint: str = _key("", "head checkpoint folder; empty: output_dir/checkpoints/best")
    ensemble: bool = _key(False, "average the top-k checkpoints")
    bootstrap: int = _key(1000, "artist bootstrap resamples of the confidence interval")


CHOICES = {
    "feature": ("cls", "cls_mean"),
    "score_head": ("linear", "norm"),
    "loss": ("margin", "logistic"),
    "random_backbone": ("", "tiny", "large"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "wandb_mode": ("", "online", "offline"),
    "split": ("train", "val", "test"),
}
# What each number may be, said the way the refusal says it.
RANGES = {
    "val_fraction": (lambda v: 0.1 <= v <= 0.8, "from 0.1 to 0.8"),
    "test_fraction": (lambda v: 0.1 <= v <= 0.8, "from 0.1 to 0.8"),
    "image_size": (lambda v: 1 <= v <= 4096, "from 1 to 4096 pixels"),
    "extract_batch_size": (lambda v: v >= 1, ">= 1"),
    "num_workers": (lambda v: -1 <= v <= 256, "from -1 (one per CPU core) to 256"),
    "hidden_dim": (lambda v: v >= 1, ">= 1"),
    "proj_dim": (lambda v: v >= 1, ">= 1"),
    "dropout": (lambda v: 0 <= v < 1, ">= 0 and < 1"),
    "batch_size": (lambda v: v >= 2, ">= 2 (a pair needs two images in the batch)"),
    "grad_accum_steps": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: 0 < v <= 10, "> 0 and <= 10"),
    "weight_decay": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "patience": (lambda v: v >= 1, ">= 1"),
    "min_lr": (lambda v: v >= 0, ">= 0"),
    "margin": (lambda v: v > 0, "> 0 (with 0 a constant score has zero loss)"),
    "seed": (lambda v: 0 <= v < 2**32, "from 0 to 2**32 - 1 (numpy seeds)"),
    "top_k": (lambda v: v >= 0, ">= 0"),
    "sample_pairs": (lambda v: v >= 0, ">= 0"),
    "bootstrap": (lambda v: v >= 1, ">= 1"),
}
NOT_EMPTY = ("data_dir", "output_dir", "cache_dir", "backbone", "wandb_project")
DINOV2_PATCH = 14  # every facebook/dinov2-* checkpoint and both random architectures

# The keys each step reads; scripts pass the union of the groups they use.
DATA_KEYS = ("data_dir", "demo_data", "skip_bad_images", "val_fraction", "test_fraction", "seed")
BACKBONE_KEYS = ("backbone", "random_backbone", "image_size", "feature", "cache_dir", "extract_batch_size",
                 "num_workers", "mixed_precision")
HEAD_KEYS = ("hidden_dim", "proj_dim", "dropout", "score_head")
TRAIN_KEYS = ("batch_size", "grad_accum_steps", "lr", "weight_decay", "epochs", "patience", "min_lr", "margin", "loss",
              "top_k", "resume", "resume_from_checkpoint", "overwrite_output_dir", "sample_pairs")
TRACKING_KEYS = ("wandb_project", "wandb_mode")
EVAL_KEYS = ("split", "checkpoint", "ensemble", "bootstrap")
KEY_GROUPS = dict(run=("output_dir",), data=DATA_KEYS, backbone=BACKBONE_KEYS, head=HEAD_KEYS, train=TRAIN_KEYS,
                  tracking=TRACKING_KEYS, eval=EVAL_KEYS)


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def check_value(name: str, value, source: str):
    """The value of one key, type- and range-checked; `source` (file or flag) starts the message."""
    expected = {f.name: f.type for f in fields(Config)}[name]
    # JSON has no int/float distinction for whole numbers and bool is an int in Python: be exact.
    ok = isinstance(value, bool) if expected is bool else (
        isinstance(value, expected) and not isinstance(value, bool)
        or expected is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{source}: key {name!r} must be {expected.__name__}, got {value!r}")
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{source}: key {name!r} must be one of {CHOICES[name]}, got {value!r}")
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{source}: key {name!r} must be a finite number, got {value!r}")
    if name in RANGES and not RANGES[name][0](value):
        raise ConfigError(f"{source}: key {name!r} must be {RANGES[name][1]}, got {value!r}")
    if name in NOT_EMPTY and not value.strip():
        raise ConfigError(f"{source}: key {name!r} must not be empty")
    return float(value) if expected is float else value


def known_patch_size(cfg: "Config") -> int | None:
    """The backbone's patch size when it can be known without loading it, else None."""
    local = Path(cfg.backbone) / "config.json"
    if local.is_file():
        try:
            return int(json.loads(local.read_text())["patch_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if cfg.random_backbone or cfg.backbone.startswith("facebook/dinov2-"):
        return DINOV2_PATCH
    return None


def check_config(cfg: "Config", source: str) -> "Config":
    """Rules between keys, after the file and the flags are merged."""
    for name, fraction in (("val_fraction", cfg.val_fraction), ("test_fraction", cfg.test_fraction)):
        if abs(round(fraction * 10) - fraction * 10) > 1e-6:
            raise ConfigError(f"{source}: key {name!r} must be a whole tenth (0.1, 0.2, ...), got {fraction}")
    if cfg.val_fraction + cfg.test_fraction > 0.8 + 1e-9:
        raise ConfigError(f"{source}: val_fraction + test_fraction = {cfg.val_fraction + cfg.test_fraction:g} "
                          "must leave at least 0.2 to train on")
    patch = known_patch_size(cfg)
    if patch is not None and cfg.image_size < patch:
        raise ConfigError(f"{source}: key 'image_size' {cfg.image_size} is smaller than one patch of the "
                          f"backbone ({patch} px)")
    return cfg


def load_json(path: str | os.PathLike) -> dict:
    """Read a config JSON object, refusing unknown keys, wrong types and values out of range."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file is a JSON object of key: value, got a {type(raw).__name__}")
    known = [f.name for f in fields(Config)]
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(known)})")
        raw[key] = check_value(key, value, str(path))
    return raw


def load_config(path: str | os.PathLike, **overrides) -> Config:
    """A Config from a JSON file (a run's config.json or one of configs/) and keyword overrides."""
    values = load_json(path)
    values.update({k: check_value(k, v, f"override {k}") for k, v in overrides.items()})
    return check_config(Config(**values), str(path))


def _flag(text: str, name: str, kind: type):
    """argparse type of one key: parse, then the same range checks as a file value."""
    value = parse_bool(text) if kind is bool else kind(text)
    try:
        return check_value(name, value, f"--{name}")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(doc: str, keys, defaults: dict, config_path: str,
                 add_arguments=None) -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the names of the script's own arguments."""
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/baseline.json", help="JSON config (default: %(default)s)")
    if add_arguments is not None:
        add_arguments(parser)
    own = {action.dest for action in parser._actions}
    group = parser.add_argument_group(f"config keys (default: the value in {config_path}, else built in)")
    for f in fields(Config):
        if f.name not in keys or f.name in own:
            continue
        shown = defaults.get(f.name, f.default)
        extra = dict(nargs="?", const=True, metavar="true|false") if f.type is bool else dict(
            metavar="{" + ",".join(c or '""' for c in CHOICES[f.name]) + "}" if f.name in CHOICES
            else f.type.__name__.upper())
        group.add_argument(f"--{f.name}", type=lambda text, n=f.name, k=f.type: _flag(text, n, k), default=None,
                           help=f"{f.metadata['help']} (default: {json.dumps(shown)})", **extra)
    return parser, own


def parse_config(doc: str, argv: list[str] | None = None, add_arguments=None,
                 keys=None) -> tuple[Config, argparse.Namespace]:
    """A script's command line: --config FILE, a --key for each of `keys` (default: all), and its own.

    `keys` holds key names and group names of KEY_GROUPS ("data", "train", ...).
    Returns the resolved Config and the namespace of the script's own arguments. The script-level entry:
    a bad file or value ends the program with one line naming it.
    """
    keys = {k for item in keys for k in KEY_GROUPS.get(item, (item,))} if keys is not None else {
        f.name for f in fields(Config)}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default="configs/baseline.json")
    first, _ = pre.parse_known_args(argv)
    try:
        try:
            values = load_json(first.config)
        except ConfigError:
            if not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
                raise
            values = {}  # --help works from any folder: it shows the built-in values
        parser, own = build_parser(doc, keys, values, first.config, add_arguments)
        args = parser.parse_args(argv)
        values.update({k: getattr(args, k) for k in keys - own if getattr(args, k, None) is not None})
        cfg = check_config(Config(**values), f"{first.config} with the flags given")
        if "wandb_mode" in keys:
            requested_mode(cfg.wandb_mode)  # the environment, checked before any work
    except (ConfigError, TrackingError) as err:
        raise SystemExit(f"error: {err}") from None
    return cfg, argparse.Namespace(**{k: v for k, v in vars(args).items() if k in own})


def print_config(cfg: Config, file=sys.stdout) -> None:
    print(json.dumps(dataclasses.asdict(cfg), indent=2), file=file, flush=True)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
