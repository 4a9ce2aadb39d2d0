"""One Config for every script: JSON file first, then `--key value` overrides.

    python train.py --config configs/demo.json --lr 3e-4 --epochs 5

Every field below is a key of the JSON files in configs/ and a flag of every script. An unknown
key or a value of the wrong type is an error that names the key.
"""

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from runfolder import atomic_write_text


@dataclass
class Config:
    # data
    data_dir: str = "data/demo"
    output_dir: str = "runs/baseline"
    cache_dir: str = "cache"  # feature cache, shared between runs
    demo_data: bool = False  # generate the synthetic demo data set into data_dir when it is missing
    skip_bad_images: bool = False  # drop bad rows with a warning instead of refusing to start
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # backbone and preprocessing
    backbone: str = "facebook/dinov2-large"  # hub id or local directory
    random_backbone: str = ""  # "tiny" or "large": build a random DINOv2 into `backbone` when it is missing
    image_size: int = 768  # REQ-U-005
    feature: str = "cls"  # "cls" (spec) or "cls_mean" (CLS + mean patch token)
    extract_batch_size: int = 32
    num_workers: int = -1  # DataLoader processes decoding images; -1: one per CPU core (per process)
    # head
    hidden_dim: int = 512
    proj_dim: int = 256
    dropout: float = 0.1
    score_head: str = "linear"  # "linear" or "norm" (the spec's -||emb||)
    # training (spec 4.4.4)
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    epochs: int = 100
    patience: int = 10
    min_lr: float = 1e-6
    margin: float = 1.0
    seed: int = 42
    mixed_precision: str = "fp16"  # used on CUDA; CPU falls back to fp32 (Accelerate has no CPU fp16)
    top_k: int = 3  # best checkpoints kept for ensembles (REQ-O-005)
    resume: bool = False  # continue the run in output_dir from its latest saved state
    resume_from_checkpoint: str = ""  # continue from this saved state folder (output_dir/state/epoch...)
    overwrite_output_dir: bool = False  # a fresh run into a folder holding another run deletes that run first
    wandb_project: str = "artrank"
    wandb_mode: str = ""  # "online" or "offline"; "" = online only when wandb credentials exist (REQ-N-004)
    sample_pairs: int = 16  # val pairs shown with their images in the tracker (REQ-O-003)
    # evaluation
    split: str = "test"
    checkpoint: str = ""  # default: output_dir/checkpoints/best
    ensemble: bool = False
    bootstrap: int = 1000


CHOICES = {
    "feature": ("cls", "cls_mean"),
    "score_head": ("linear", "norm"),
    "random_backbone": ("", "tiny", "large"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "wandb_mode": ("", "online", "offline"),
    "split": ("train", "val", "test"),
}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _check_value(name: str, value, expected: type, source: str):
    # JSON has no int/float distinction for whole numbers and bool is an int in Python: be exact.
    ok = isinstance(value, bool) if expected is bool else (
        isinstance(value, expected) and not isinstance(value, bool)
        or expected is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise SystemExit(f"{source}: key {name!r} must be {expected.__name__}, got {value!r}")
    if name in CHOICES and value not in CHOICES[name]:
        raise SystemExit(f"{source}: key {name!r} must be one of {CHOICES[name]}, got {value!r}")
    return float(value) if expected is float else value


def load_json(path: str | os.PathLike) -> dict:
    """Read a config JSON, refusing unknown keys and wrong types."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"cannot read config {path}: {err}") from err
    types = {f.name: f.type for f in fields(Config)}
    for key, value in raw.items():
        if key not in types:
            raise SystemExit(f"{path}: unknown key {key!r} (known: {', '.join(types)})")
        raw[key] = _check_value(key, value, types[key], str(path))
    return raw


def parse_config(doc: str, argv: list[str] | None = None,
                 add_arguments=None) -> tuple[Config, argparse.Namespace]:
    """The command line of a script: --config FILE, one --key per Config field, and the script's own.

    Returns the resolved Config and the namespace of the script's own arguments.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/baseline.json", help="JSON config (default: %(default)s)")
    if add_arguments is not None:
        add_arguments(parser)
    own = {action.dest for action in parser._actions}
    group = parser.add_argument_group("config overrides (default: the config file, else the value shown)")
    for f in fields(Config):
        if f.name in own:
            continue
        kind = _parse_bool if f.type is bool else f.type
        group.add_argument(f"--{f.name}", type=kind, default=None, metavar=f.type.__name__.upper(),
                           choices=CHOICES.get(f.name), help=f"default {f.default!r}")
    args = parser.parse_args(argv)
    values = load_json(args.config)
    overrides = {f.name: getattr(args, f.name) for f in fields(Config) if f.name not in own}
    values.update({k: v for k, v in overrides.items() if v is not None})
    script_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k in own})
    return Config(**values), script_args


def print_config(cfg: Config, file=sys.stdout) -> None:
    print(json.dumps(dataclasses.asdict(cfg), indent=2), file=file, flush=True)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
