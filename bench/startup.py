"""Start-up: how long each script takes to answer --help, and predict.py from process start to the score of one
phone photo on an ONNX export, against the least any Python scorer of it costs (importing onnxruntime and Pillow).

    nice python -m bench.startup --run runs/demo [--repeats 5]     (a run holding model.onnx: make demo)
    nice python -m bench.startup                                  (trains and exports a tiny run first)

Each figure is the median wall time of --repeats fresh processes (the interpreter's start included). What a
process loads matters more than the machine: torch alone costs seconds on a small CPU, and neither --help nor
the ONNX path imports it.
"""

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch  # the bench's own process only: the timed ones are fresh
from PIL import Image

from bench.common import machine
from pipeline.demo_data import generate_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("make_pairs", "train", "evaluate", "export_onnx", "predict", "crossval")


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return statistics.median(times)


def phone_photo(path: Path, seed: int = 0) -> Path:
    """A 12 MP JPEG of a drawing's tones: the size a phone writes, so the decode is the one users pay."""
    rng = np.random.default_rng(seed)
    tone = np.linspace(40, 230, 4032, dtype=np.float32)[None, :, None] + rng.normal(0, 12, (3024, 1, 3))
    Image.fromarray(np.clip(tone, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def tiny_run(root: Path) -> Path:
    """A small demo data set, trained for 2 epochs on a random tiny DINOv2 and exported: any export times
    the same start-up, and a tiny one takes a minute to make on a CPU."""
    generate_demo_dataset(root / "data", num_artists=20, works_per_artist=5)
    args = ["--config", str(ROOT / "configs/demo.json"), "--data_dir", str(root / "data"), "--output_dir",
            str(root / "run"), "--cache_dir", str(root / "cache"), "--backbone", str(root / "backbone"),
            "--image_size", "56", "--demo_data", "false"]
    for script, extra in (("train.py", ["--epochs", "2"]), ("export_onnx.py", ["--bench_seconds", "0"])):
        result = subprocess.run([sys.executable, script, *args, *extra], cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{script} failed:\n{result.stderr[-2000:]}")
    return root / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder with model.onnx and model.json (default: make a tiny one)")
    parser.add_argument("--repeats", type=int, default=5, help="processes per figure (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else tiny_run(Path(tmp))
        if not (run / "model.onnx").is_file():
            raise SystemExit(f"--run {run}: no model.onnx (export_onnx.py writes it)")
        photo = phone_photo(Path(tmp) / "photo.jpg")
        python = [sys.executable]
        rows = [("python -c 'import onnxruntime, PIL' (the least a scorer loads)",
                 median_seconds(python + ["-c", "import onnxruntime, PIL"], args.repeats))]
        rows += [(f"{script}.py --help", median_seconds(python + [f"{script}.py", "--help"], args.repeats))
                 for script in SCRIPTS]
        rows.append(("predict.py --model RUN/model.onnx PHOTO (start to score, 12 MP JPEG)",
                     median_seconds(python + ["predict.py", "--model", str(run / "model.onnx"), str(photo)],
                                    args.repeats)))
        rows.append(("python -c 'import torch' (for comparison: what no row above loads)",
                     median_seconds(python + ["-c", "import torch"], args.repeats)))
    print(f"### Start-up: median of {args.repeats} fresh processes; {machine(torch.device('cpu'))}; "
          f"Python {platform.python_version()}\n")
    print("| command | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    floor, helps, predict = rows[0][1], [s for _, s in rows[1:-2]], rows[-2][1]
    print(f"\nstartup: --help {min(helps):.2f}-{max(helps):.2f} s, predict to score {predict:.2f} s, "
          f"import onnxruntime+PIL {floor:.2f} s, import torch {rows[-1][1]:.2f} s")


if __name__ == "__main__":
    main()
