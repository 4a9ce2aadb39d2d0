"""Shared fixtures: a tiny random DINOv2 saved to disk (the real loading path runs), small image
folders in the input format, and a runner for the real scripts."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Tests never reach the network: wandb offline, no model hub.
os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                  TOKENIZERS_PARALLELISM="false")
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    import torch
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
    command = (launcher or [sys.executable]) + [str(ROOT / script), *map(str, args)]
    result = subprocess.run(command, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
                             f"\n--- stderr\n{result.stderr[-4000:]}")
    return result
