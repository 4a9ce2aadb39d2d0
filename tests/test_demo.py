"""`make demo`'s training step on the bundled synthetic data: the tiers are learnable from pixels."""

import json

import pytest
from conftest import run_script

pytestmark = pytest.mark.slow

README_TEST_ACCURACY = 0.724  # README, "Demo results"


def test_demo_reaches_the_test_accuracy_the_readme_states(tmp_path):
    run_script("train.py", "--config", "configs/demo.json", "--data_dir", tmp_path / "demo",
               "--backbone", tmp_path / "dinov2-tiny-random", "--output_dir", tmp_path / "run",
               "--cache_dir", tmp_path / "cache")
    metrics = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    # Random tiny backbone: far above chance (0.5), and the figure the README quotes.
    assert metrics["test/pairwise_acc"] == pytest.approx(README_TEST_ACCURACY, abs=0.02)
    assert metrics["test/pairs"] > 1000
