"""Start-up: --help and the refusals that need no model answer before torch, transformers or datasets load,
and the ONNX path (predict.py and the API on an export) never loads torch, transformers, accelerate or datasets.

Times depend on the machine and its load; what is checked is what does not: which libraries a process loaded.
bench/startup.py measures the times.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, val_images

from artrank import load

SCRIPTS = ("make_pairs", "train", "evaluate", "export_onnx", "predict", "crossval", "review")
# Each costs from a third of a second (pandas) to seconds (torch) to import on a 2-core machine.
HEAVY = ("torch", "transformers", "accelerate", "datasets", "wandb", "matplotlib", "sklearn", "pandas", "onnx",
         "pyarrow", "scipy")
NOT_ON_THE_ONNX_PATH = ("torch", "transformers", "accelerate", "datasets", "wandb", "matplotlib", "sklearn")


def loaded_after(code: str, *, cwd=ROOT) -> tuple[list[str], str]:
    """The heavy libraries a fresh interpreter holds after running `code`, and what it printed on stderr."""
    probe = ("import sys\ntry:\n" + "".join(f"    {line}\n" for line in code.splitlines())
             + "except SystemExit as end:\n    print(end.code if isinstance(end.code, str) else '', file=sys.stderr)\n"
             + f"print('LOADED ' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    line = [text for text in result.stdout.splitlines() if text.startswith("LOADED")]
    assert line, f"the probe did not finish:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return line[-1].split()[1:], result.stdout + result.stderr


def run_script_code(script: str, *args: str) -> str:
    path = script + ".py"
    return f"import runpy; sys.argv = {[path, *args]!r}\nrunpy.run_path({path!r}, run_name='__main__')"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_loads_no_heavy_library(script):
    loaded, output = loaded_after(run_script_code(script, "--help"))
    assert "usage:" in output and loaded == []


@pytest.mark.parametrize("args, said", [(["--epochs", "1.5"], "--epochs"), (["--no_such_key", "1"], "no_such_key"),
                                        (["--config", "missing.json"], "missing.json")])
def test_a_refusal_of_the_command_line_loads_no_heavy_library(tmp_path, args, said):
    loaded, output = loaded_after(run_script_code("train", *args))
    assert said in output and "error" in output and loaded == []


@pytest.mark.slow
def test_the_onnx_path_scores_without_torch_and_gives_the_scores_torch_s_resize_gives(exported, tmp_path):
    """predict.py --model and artrank.load of the export, in fresh processes: no torch, transformers,
    accelerate or datasets, and each image's score is the one this process (torch loaded, so torch's own
    resize) computes with the same ONNX model."""
    images = val_images(exported)[:5]
    model = exported["out"] / "model.onnx"
    api = (f"import artrank, json\nmodel = artrank.load({str(exported['out'])!r})\n"
           f"print('SCORES ' + json.dumps(model.score({images!r})))")
    loaded, output = loaded_after(api, cwd=tmp_path)
    assert set(loaded).isdisjoint(NOT_ON_THE_ONNX_PATH), loaded
    scores = json.loads(next(line for line in output.splitlines() if line.startswith("SCORES "))[7:])
    assert "torch" in sys.modules and scores == load(exported["out"]).score(images)

    out = tmp_path / "scores.csv"
    loaded, output = loaded_after(run_script_code(str(ROOT / "predict"), "--model", str(model), *images,
                                                  "--out", str(out)), cwd=tmp_path)
    assert set(loaded).isdisjoint(NOT_ON_THE_ONNX_PATH), (loaded, output)
    written = {line.split(",")[0]: float(line.split(",")[1]) for line in out.read_text().splitlines()[1:]}
    assert written == pytest.approx(dict(zip(images, scores)), abs=1e-6)


def test_every_script_is_a_console_command_that_answers_help_from_any_folder(tmp_path):
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    commands = project["project"]["scripts"]
    assert sorted(commands.values()) == sorted(f"{script}:main" for script in SCRIPTS)
    assert set(SCRIPTS) <= set(project["tool"]["setuptools"]["py-modules"])
    installed = Path(sys.executable).parent / "artrank-predict"
    if installed.exists():  # made by pip install -e . (make install); a checkout without it still runs the rest
        result = subprocess.run([str(installed), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith("usage: artrank-predict")
