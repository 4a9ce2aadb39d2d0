"""Shared fixtures and helpers: a tiny random DINOv2 saved to disk (the real loading path runs), small image
folders in the input format, a runner for the real scripts, and one trained and exported run."""

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from samples import append_rows, png_file, truncated_jpeg

ROOT = Path(__file__).resolve().parents[1]
# Tests never reach the network: wandb offline, no model hub.
os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                  TOKENIZERS_PARALLELISM="false")
os.environ.pop("WANDB_API_KEY", None)
# One torch thread per test process and per script it starts: the tiny models gain nothing from more, and
# pytest-xdist already runs a worker per core, where extra OpenMP threads spin against each other.
# (The demo test keeps the machine's own thread count: its figures are compared digit for digit.)
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
# A shell's background job starts with Ctrl-C ignored, and Python then never raises KeyboardInterrupt; the
# interruption tests must see what a user at a terminal sees, in this process and in the scripts it starts
# (a handled signal is reset to the default at exec, an ignored one stays ignored).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
SPLIT = dict(val_fraction=0.1, test_fraction=0.1, seed=42)
# The first words of a script's command line that pick one of its commands (review.py audit ...).
COMMAND_OF = {"review": ["audit"]}


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "dinov2-tiny"
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          patch_size=14, image_size=56)
    Dinov2Model(config).save_pretrained(path)
    return path


def write_dataset(data_dir: Path, *, artists: int = 12, per_artist: int = 8, seed: int = 0,
                  size: tuple[int, int] = (48, 40)) -> Path:
    """A small data set in the input format whose tier shows in the pixels (brightness and noise),
    blurred by each artist's own brightness so that ranking is learnable but not trivial."""
    rng = np.random.default_rng(seed)
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = ["file_name,tier,artist"]
    for a in range(artists):
        artist_shift = rng.normal(0, 30)
        for k in range(per_artist):
            tier = "SABC"[(a + k) % 4]
            quality = "CBAS".index(tier) / 3
            base = 60 + 120 * quality + artist_shift + rng.normal(0, 20 + 50 * (1 - quality), (size[1], size[0], 3))
            pixels = np.clip(base, 0, 255).astype(np.uint8)
            name = f"images/a{a:02d}_{k:02d}.png"
            Image.fromarray(pixels).save(data_dir / name)
            lines.append(f"{name},{tier},artist{a:02d}")
    (data_dir / "metadata.csv").write_text("\n".join(lines) + "\n")
    return data_dir


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


def image_frame(data_dir, **options) -> tuple[pd.DataFrame, list[str]]:
    """data.image_table of a folder, as a DataFrame (tiers and splits by name), and its notes."""
    from data import image_table
    from pipeline.tables import frame

    table, notes = image_table(data_dir, **(SPLIT | options))
    return frame(table), notes


def write_config(tmp_path: Path, payload) -> str:
    """A config file of `payload` (a dict, or the file's text)."""
    path = tmp_path / "config.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def tiny_args(tmp_path: Path, data_dir: Path, backbone: Path, **overrides) -> list[str]:
    """Command-line overrides that make any script run in seconds on the tiny backbone."""
    values = dict(data_dir=data_dir, output_dir=tmp_path / "run", cache_dir=tmp_path / "cache", backbone=backbone,
                  image_size=56, num_workers=0, epochs=3, batch_size=16, lr=1e-3, hidden_dim=32, proj_dim=16,
                  bootstrap=50)
    values.update(overrides)
    # A config file rather than flags: each script takes only the keys it uses as flags.
    text = json.dumps({"demo_data": False, "random_backbone": ""} | {
        k: str(v) if isinstance(v, Path) else v for k, v in values.items()}, indent=2)
    config = tmp_path / f"test_config_{hashlib.sha1(text.encode()).hexdigest()[:8]}.json"
    config.write_text(text)
    return ["--config", str(config)]


def run_script(script: str, *args, cwd: Path | None = None, check: bool = True, launcher: list[str] | None = None,
               timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter; `env` adds variables, and removes those it sets to None."""
    command = (launcher or [sys.executable]) + [str(ROOT / script), *map(str, args)]
    environment = {k: v for k, v in (dict(os.environ, PYTHONPATH=str(ROOT)) | (env or {})).items() if v is not None}
    result = subprocess.run(command, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                            env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
                             f"\n--- stderr\n{result.stderr[-4000:]}")
    return result


def read_head(directory: Path):
    """A saved head with whatever it was made for (the scripts load it only for their own config and run)."""
    from model import load_head

    meta = json.loads((Path(directory) / "head.json").read_text())
    keys = ("backbone_id", "image_size", "patch_size", "preprocessing", "feature")
    return load_head(directory, identity={key: meta[key] for key in keys}, run=meta["made_from"])


def spec_pairs(ids: list[str], tiers: list[str]) -> list[tuple[str, str, int]]:
    """The double loop of spec 4.4.2, with its tier_order."""
    tier_order = {"S": 4, "A": 3, "B": 2, "C": 1}
    pairs = []
    for i, j in itertools.product(range(len(ids)), repeat=2):
        if i >= j:
            continue
        if tier_order[tiers[i]] > tier_order[tiers[j]]:
            pairs.append((ids[i], ids[j], 1))
        elif tier_order[tiers[i]] < tier_order[tiers[j]]:
            pairs.append((ids[i], ids[j], -1))
    return pairs


def artists_of_one_main_tier(seed: int = 0) -> pd.DataFrame:
    """40 artists, each with 6 works of one main tier and 2 of any tier: folds cut without regard to
    tier would give some folds far more S than others."""
    rng = np.random.default_rng(seed)
    records = []
    for a in range(40):
        main = "SABC"[a % 4]
        for k in range(8):
            tier = main if k < 6 else "SABC"[rng.integers(4)]
            records.append(dict(image_id=f"{main}{a:02d}_{k}", tier=tier, artist=f"{main}-artist{a:02d}"))
    return pd.DataFrame(records)


# ---------------------------------------------------------------- a folder with every kind of bad row

@pytest.fixture
def bad_folder(tmp_path) -> Path:
    """write_dataset's 96 good rows (lines 2-97) and then one row for each kind of bad input."""
    data_dir = write_dataset(tmp_path / "data")
    images = data_dir / "images"
    (images / "truncated.jpg").write_bytes(truncated_jpeg())
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("not a picture")
    (images / "bomb.png").write_bytes(png_file(20000, 20000))
    (images / "copy of a00_00.png").write_bytes((images / "a00_00.png").read_bytes())
    append_rows(data_dir,
                "images/truncated.jpg,A,artist00",    # 98
                "images/empty.png,B,artist01",        # 99
                "images/text.png,C,artist02",         # 100
                "images/bomb.png,S,artist03",         # 101
                "images/missing.png,A,artist04",      # 102
                "images/a00_00.png,S,artist00",       # 103 listed twice
                '"images/copy of a00_00.png",B,artist05',  # 104 same content, another name
                "images/a01_00.png,D,artist06",       # 105 unknown tier (and listed twice)
                "images/a02_00.png,A,",               # 106 missing artist (and listed twice)
                "images/a03_00.png,A,artist07,extra")  # 107 too many fields
    return data_dir


EXPECTED = {98: ("images/truncated.jpg", "truncated"), 99: ("images/empty.png", "empty file"),
            100: ("images/text.png", "cannot identify its format"), 101: ("images/bomb.png", "decompression bomb"),
            102: ("images/missing.png", "file not found"), 103: ("images/a00_00.png", "listed twice, first at row 2"),
            104: ("images/copy of a00_00.png", "same image content as row 2 (images/a00_00.png)"),
            105: ("images/a01_00.png", "unknown tier 'D'"), 106: ("images/a02_00.png", "missing artist"),
            107: ("images/a03_00.png", "4 fields but the header has 3")}


# ---------------------------------------------------------------- one trained and exported run

@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_backbone) -> dict:
    """A trained and exported tiny run: its CLI args, output dir, data dir and the export's console output."""
    root = tmp_path_factory.mktemp("exported")
    data_dir = write_dataset(root / "data")
    # 64 is padded to 70 = 5 patches, while the backbone was made for 56 = 4: the baked position
    # embeddings are interpolated, the case that fails in ONNX when it is left to the graph.
    # novelty_alpha 0.2: its few validation images (8) are too few for a threshold at the default 0.05.
    args = tiny_args(root, data_dir, tiny_backbone, image_size=64, novelty_alpha=0.2)
    run_script("train.py", *args)
    export = run_script("export_onnx.py", *args, "--fp16", "--parity_images", "3", "--bench_seconds", "1")
    return dict(args=args, out=root / "run", data=data_dir, backbone=tiny_backbone, stdout=export.stdout)


def val_images(run: dict) -> list[str]:
    splits = pd.read_csv(run["out"] / "splits.csv")
    return [str(run["data"] / name) for name in splits[splits.split == "val"].file_name]


def pixels_of(paths: list[str]) -> np.ndarray:
    from pipeline.images import open_image, preprocess

    return torch.stack([preprocess(open_image(p), 64, 14) for p in paths]).numpy()


def copy_run(run: dict, tmp_path: Path, *, with_export: bool) -> Path:
    """The trained run in a fresh output dir, with or without the exported files."""
    skip = () if with_export else ("model*.onnx*", "model.json")
    return Path(shutil.copytree(run["out"], tmp_path / "copy", ignore=shutil.ignore_patterns("wandb", *skip)))


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
