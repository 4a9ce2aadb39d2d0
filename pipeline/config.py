"""The settings: one declaration per config key, from which the flags, --help, a run's identity and the
cross-validation grid follow.

    python train.py --config configs/demo.json --lr 3e-4 --epochs 5 --resume

Each key below declares its default and type, its help, what values it may take, the scripts that take it
as a flag, and its role: the stage of a run it decides (the split, the features, the head, the head's
training, the checkpoints kept), which makes it part of the run's identity, or RUNTIME when it changes how a
command runs and never what it computes. `searchable` keys are the ones cross-validation may sweep: they
change nothing upstream of the cached features. A boolean flag alone means true (`--resume`), and
`--resume false` also works. An unknown key, a value of the wrong type (a bool is not an int) or out of
range is refused with one line that names the key.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ArtrankError
from .files import atomic_write_json


class ConfigError(ArtrankError):
    """A config file or value that cannot be used; the message names the file or flag and the key."""


# Roles: the stage of a run a key decides, or RUNTIME.
SPLIT, FEATURES, HEAD, TRAINING, CHECKPOINTS = "split", "features", "head", "training", "checkpoints"
RUNTIME = "runtime"
# The scripts, and the groups of them that read the same keys.
MAKE_PAIRS, TRAIN, EVALUATE, EXPORT, PREDICT, CROSSVAL, REVIEW = (
    "make_pairs", "train", "evaluate", "export_onnx", "predict", "crossval", "review")
SCRIPTS = (MAKE_PAIRS, TRAIN, EVALUATE, EXPORT, PREDICT, CROSSVAL, REVIEW)
READS_DATA = (MAKE_PAIRS, TRAIN, EVALUATE, EXPORT, CROSSVAL, REVIEW)
RUNS_BACKBONE = (TRAIN, EVALUATE, EXPORT, PREDICT, CROSSVAL, REVIEW)
EXTRACTS = (TRAIN, EVALUATE, CROSSVAL, REVIEW)
TRAINS = (TRAIN, CROSSVAL)
TRACKED = (TRAIN, EVALUATE, CROSSVAL)
# The scripts that work on a trained run: its folder's config.json gives every key they do not set. The review's
# fold heads train with the run's own head and training keys, so it takes none of them as flags.
READS_RUN = (EVALUATE, EXPORT, PREDICT, CROSSVAL, REVIEW)
# The default settings are the repository's own, wherever the command is run from.
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "baseline.json"


@dataclass(frozen=True)
class Key:
    """What one config key is (see the module's docstring)."""
    help: str
    role: str
    scripts: tuple[str, ...]
    choices: tuple | None = None
    bounds: tuple | None = None  # (predicate, how the refusal says it)
    searchable: bool = False
    not_empty: bool = False
    path: str = ""  # LOCAL: always a local path; LOCAL_OR_HUB: a local path when one exists, else a hub id


def key(default, help: str, role: str, scripts: tuple[str, ...], **rules):
    return field(default=default, metadata={"key": Key(help, role, scripts, **rules)})


LOCAL, LOCAL_OR_HUB = "local", "local or hub"


def at_least(low, text: str | None = None):
    return (lambda v: v >= low), text or f">= {low}"


@dataclass
class Config:
    # data
    data_dir: str = key("data/demo", "folder with metadata.csv and the images", RUNTIME, READS_DATA, not_empty=True,
                        path=LOCAL_OR_HUB)
    output_dir: str = key("runs/baseline", "the run folder", RUNTIME, SCRIPTS, not_empty=True, path=LOCAL)
    cache_dir: str = key("cache", "feature and image-check cache, shared between runs", RUNTIME, READS_DATA,
                         not_empty=True, path=LOCAL)
    demo_data: bool = key(False, "generate the synthetic demo data set into data_dir when it is missing", RUNTIME,
                          READS_DATA)
    skip_bad_images: bool = key(False, "drop bad rows with a warning instead of refusing to start", RUNTIME,
                                READS_DATA)
    val_fraction: float = key(0.1, "share of the artists held out for validation (whole tenths)", SPLIT, READS_DATA,
                              bounds=((lambda v: 0.1 <= v <= 0.8), "from 0.1 to 0.8"))
    test_fraction: float = key(0.1, "share of the artists held out for the test (whole tenths)", SPLIT, READS_DATA,
                               bounds=((lambda v: 0.1 <= v <= 0.8), "from 0.1 to 0.8"))
    # backbone and preprocessing
    backbone: str = key("facebook/dinov2-large", "hub id or local directory", RUNTIME, RUNS_BACKBONE, not_empty=True,
                        path=LOCAL_OR_HUB)
    random_backbone: str = key("", "build a random DINOv2 of this architecture into `backbone` when missing",
                               RUNTIME, RUNS_BACKBONE, choices=("", "tiny", "large"))
    image_size: int = key(768, "long side of the letterboxed image", FEATURES, RUNS_BACKBONE,
                          bounds=((lambda v: 1 <= v <= 4096), "from 1 to 4096 pixels"))
    feature: str = key("cls", "cls (spec) or cls_mean (CLS + mean patch token)", FEATURES, RUNS_BACKBONE,
                       choices=("cls", "cls_mean"), searchable=True)
    extract_batch_size: int = key(32, "images per backbone batch", RUNTIME, EXTRACTS + (PREDICT,),
                                  bounds=at_least(1))
    num_workers: int = key(-1, "DataLoader processes decoding images; -1: one per CPU core (per process)", RUNTIME,
                           EXTRACTS, bounds=((lambda v: -1 <= v <= 256), "from -1 (one per CPU core) to 256"))
    # head
    hidden_dim: int = key(512, "projector hidden width", HEAD, TRAINS, bounds=at_least(1), searchable=True)
    proj_dim: int = key(256, "projector output width", HEAD, TRAINS, bounds=at_least(1), searchable=True)
    dropout: float = key(0.1, "projector dropout", HEAD, TRAINS, bounds=((lambda v: 0 <= v < 1), ">= 0 and < 1"),
                         searchable=True)
    score_head: str = key("linear", "linear, or norm (the spec's -||emb||)", HEAD, TRAINS,
                          choices=("linear", "norm"), searchable=True)
    # training
    batch_size: int = key(32, "images per step; the loss takes every cross-tier pair among them", TRAINING, TRAINS,
                          bounds=at_least(2, ">= 2 (a pair needs two images in the batch)"), searchable=True)
    grad_accum_steps: int = key(1, "batches per optimiser step", TRAINING, TRAINS, bounds=at_least(1))
    lr: float = key(1e-4, "AdamW learning rate", TRAINING, TRAINS, bounds=((lambda v: 0 < v <= 10), "> 0 and <= 10"),
                    searchable=True)
    weight_decay: float = key(0.01, "AdamW weight decay", TRAINING, TRAINS,
                              bounds=((lambda v: 0 <= v <= 1), "from 0 to 1"), searchable=True)
    # Not runtime: the length of the cosine schedule, so more epochs is another run, not a longer one.
    epochs: int = key(100, "epochs, also the length of the cosine schedule", TRAINING, TRAINS, bounds=at_least(1),
                      searchable=True)
    patience: int = key(10, "epochs without a better val loss before early stopping", TRAINING, TRAINS,
                        bounds=at_least(1), searchable=True)
    min_lr: float = key(1e-6, "stop when the learning rate falls below this", TRAINING, TRAINS, bounds=at_least(0),
                        searchable=True)
    margin: float = key(1.0, "margin of the ranking loss", TRAINING, TRAINS,
                        bounds=((lambda v: v > 0), "> 0 (with 0 a constant score has zero loss)"), searchable=True)
    loss: str = key("margin", "margin (the spec's MarginRankingLoss), logistic (RankNet; ignores margin) or ordinal "
                    "(the tier model's cumulative-link loss alone; ignores margin and ordinal_weight)", TRAINING,
                    TRAINS, choices=("margin", "logistic", "ordinal"), searchable=True)
    # the tier model
    ordinal_weight: float = key(0.0, "weight of the tier model's ordinal loss added to the margin or logistic pair "
                                "loss; above 0 (or loss ordinal) the head also gives P(tier)", TRAINING, TRAINS,
                                bounds=at_least(0), searchable=True)
    # teachers' comparisons (DATA_DIR/comparisons.csv, pipeline/comparisons.py)
    comparison_weight: float = key(1.0, "weight of the comparisons' loss beside the tier pairs' (0: tiers alone)",
                                   TRAINING, TRAINS, bounds=at_least(0), searchable=True)
    comparison_raters: str = key("pooled", "pooled: every comparison weighs the same; equal: each rater's "
                                 "comparisons together weigh the same", TRAINING, TRAINS, choices=("pooled", "equal"),
                                 searchable=True)
    seed: int = key(42, "seed of the split, the head and the bootstrap", SPLIT, READS_DATA + TRAINS,
                    bounds=((lambda v: 0 <= v < 2**32), "from 0 to 2**32 - 1 (numpy seeds)"))
    mixed_precision: str = key("fp16", "used on CUDA; CPU runs fp32 (Accelerate has no CPU fp16)", FEATURES,
                               RUNS_BACKBONE, choices=("no", "fp16", "bf16"))
    top_k: int = key(3, "best checkpoints kept for ensembles", CHECKPOINTS, (TRAIN,), bounds=at_least(0))
    conformal_alpha: float = key(0.1, "tier sets hold the true tier with probability >= 1 - alpha (split conformal, "
                                 "fitted on the validation split)", CHECKPOINTS, (TRAIN,),
                                 bounds=((lambda v: 0 < v < 1), "> 0 and < 1"))
    novelty_alpha: float = key(0.05, "an image like the validation ones is flagged unfamiliar with probability <= "
                               "alpha (its feature's distance to the nearest training image, fitted on validation)",
                               CHECKPOINTS, (TRAIN,), bounds=((lambda v: 0 < v < 1), "> 0 and < 1"))
    resume: bool = key(False, "continue the run in output_dir from its latest saved state", RUNTIME, (TRAIN,))
    resume_from_checkpoint: str = key("", "continue from this saved state folder (output_dir/state/epoch...)",
                                      RUNTIME, (TRAIN,), path=LOCAL)
    overwrite_output_dir: bool = key(False, "a fresh run into a folder holding another run deletes that run", RUNTIME,
                                     (MAKE_PAIRS, TRAIN))
    verbose: bool = key(False, "print the resolved config first (train.py and crossval.py always do, once per run)",
                        RUNTIME, (MAKE_PAIRS, EVALUATE, EXPORT, PREDICT))
    wandb_project: str = key("artrank", "wandb project", RUNTIME, TRACKED, not_empty=True)
    wandb_mode: str = key("", "online or offline; empty: online when wandb credentials exist", RUNTIME,
                          TRACKED, choices=("", "online", "offline"))
    sample_pairs: int = key(16, "val pairs shown with their images in the tracker", RUNTIME, (TRAIN,),
                            bounds=at_least(0))
    # evaluation
    split: str = key("test", "split to evaluate", RUNTIME, (EVALUATE,), choices=("train", "val", "test"))
    checkpoint: str = key("", "head checkpoint folder; empty: output_dir/checkpoints/best", RUNTIME,
                          (EVALUATE, EXPORT, PREDICT), path=LOCAL)
    ensemble: bool = key(False, "average the top-k checkpoints", RUNTIME, (EVALUATE,))
    bootstrap: int = key(1000, "artist bootstrap resamples of the confidence interval", RUNTIME, (EVALUATE,),
                         bounds=at_least(1))
    # the review (review.py: the label audit and the next pairs)
    review_folds: int = key(5, "artist folds of the review's fold heads (each never sees its fold's artists)",
                            RUNTIME, (REVIEW,), bounds=at_least(3, ">= 3 (one fold held out, one to stop on, the "
                                                                   "rest to train)"))
    # the review page
    port: int = key(7860, "the review page's port; it listens on 127.0.0.1 only", RUNTIME, (REVIEW,),
                    bounds=((lambda v: 1 <= v <= 65535), "from 1 to 65535"))


KEYS: dict[str, Key] = {f.name: f.metadata["key"] for f in fields(Config)}
TYPES: dict[str, type] = {f.name: f.type for f in fields(Config)}
FIELD_DEFAULTS: dict = {f.name: f.default for f in fields(Config)}
SEARCHABLE = tuple(name for name, k in KEYS.items() if k.searchable)
DINOV2_PATCH = 14  # every facebook/dinov2-* checkpoint and both random architectures


def keys_of(*roles: str) -> tuple[str, ...]:
    return tuple(name for name, k in KEYS.items() if k.role in roles)


def identity(config: dict, *roles: str) -> dict:
    """The keys of `config` that make a run what it is (all roles but RUNTIME, or those of `roles`), sorted."""
    wanted = roles or (SPLIT, FEATURES, HEAD, TRAINING, CHECKPOINTS)
    return {name: config[name] for name in sorted(config) if name in KEYS and KEYS[name].role in wanted}


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def check_value(name: str, value, source: str):
    """The value of one key, type- and range-checked; `source` (file, flag or grid) starts the message."""
    expected, rules = TYPES[name], KEYS[name]
    # JSON has no int/float distinction for whole numbers and bool is an int in Python: be exact.
    ok = isinstance(value, bool) if expected is bool else (
        isinstance(value, expected) and not isinstance(value, bool)
        or expected is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{source}: key {name!r} must be {expected.__name__}, got {value!r}")
    if rules.choices is not None and value not in rules.choices:
        raise ConfigError(f"{source}: key {name!r} must be one of {rules.choices}, got {value!r}")
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{source}: key {name!r} must be a finite number, got {value!r}")
    if rules.bounds is not None and not rules.bounds[0](value):
        raise ConfigError(f"{source}: key {name!r} must be {rules.bounds[1]}, got {value!r}")
    if rules.not_empty and not value.strip():
        raise ConfigError(f"{source}: key {name!r} must not be empty")
    return float(value) if expected is float else value


def known_patch_size(cfg: Config) -> int | None:
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


def check_config(cfg: Config, source: str) -> Config:
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
    for name, value in raw.items():
        if name not in KEYS:
            raise ConfigError(f"{path}: unknown key {name!r} (known: {', '.join(KEYS)})")
        raw[name] = check_value(name, value, str(path))
    return raw


def load_config(path: str | os.PathLike, **overrides) -> Config:
    """A Config from a JSON file (a run's config.json or one of configs/) and keyword overrides."""
    values = load_json(path)
    values.update({k: check_value(k, v, f"override {k}") for k, v in overrides.items()})
    return check_config(Config(**values), str(path))


def print_config(cfg: Config, file=sys.stdout) -> None:
    print(json.dumps(dataclasses.asdict(cfg), indent=2), file=file, flush=True)


def recorded_paths(values: dict) -> dict:
    """The values with every local path made absolute: a run's config.json is read from any folder, so a path
    in it must not mean something else there (a hub id stays a hub id)."""
    def absolute(name: str, value):
        rule = KEYS[name].path if name in KEYS else ""
        local = rule == LOCAL or rule == LOCAL_OR_HUB and Path(value).expanduser().exists()
        return os.path.abspath(Path(value).expanduser()) if value and local else value

    return {name: absolute(name, value) for name, value in values.items()}


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_json(path, recorded_paths(dataclasses.asdict(cfg)))
