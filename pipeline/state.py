"""What training leaves in a run folder: the saved state a resume continues from, the log of its epochs and
the final metrics.

A saved state (OUTPUT_DIR/state/epochNNNN-batchNNNNNN/) is Accelerate's save_state plus training.json, the
training progress and the schedule as JSON; nothing in it is loaded that could run code. train_log.jsonl has
one line per epoch; final_metrics.json is written when the run is finished.
"""

import json
import os
import shutil
from pathlib import Path

from .files import atomic_write_json, atomic_write_text, plain_modes, read_json
from .runs import FINAL_METRICS, STATE, TRAIN_LOG, RunFolderError

TRAINING_STATE = "training.json"  # in each saved state: the training progress and the schedule, as JSON
TRAINING_STATE_FORMAT = 1


def saved_state(output_dir: str | os.PathLike, resume_from: str = "") -> Path | None:
    """The state to resume from: `resume_from` (--resume_from_checkpoint), else the latest one saved; None when
    there is none."""
    state_dir = Path(output_dir) / STATE
    if resume_from:
        state = Path(resume_from)
        if not state.is_dir() or state.resolve().parent != state_dir.resolve():
            raise RunFolderError(f"--resume_from_checkpoint {state}: not a saved state of {output_dir} "
                                 f"(those are {state_dir}/epoch...)")
        return state
    states = sorted(p for p in state_dir.glob("epoch*") if p.is_dir()) if state_dir.exists() else []
    return states[-1] if states else None


def save_state(accelerator, progress, output_dir: str | os.PathLike, *, scheduler) -> Path:
    """Accelerate state into a temporary directory renamed into place: a kill leaves the last good one.

    The training progress and the schedule go into training.json, not into Accelerate's registered objects:
    Accelerate unpickles those in full, so a crafted file in a shared run folder would run code on resume.
    """
    state_dir = Path(output_dir) / STATE
    name = f"epoch{progress.epoch:04d}-batch{progress.batches_done:06d}"
    tmp = state_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / TRAINING_STATE, dict(format=TRAINING_STATE_FORMAT, progress=progress.state_dict(),
                                                     scheduler=scheduler.state_dict()))
        plain_modes(tmp)  # Accelerate writes the head's weights through safetensors, mode 0600
        shutil.rmtree(state_dir / name, ignore_errors=True)
        tmp.rename(state_dir / name)
        for old in sorted(p for p in state_dir.iterdir() if p.name != name):
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return state_dir


def check_no_code(state: Path, *, process_index: int) -> None:
    """Refuse a saved state whose pickles would call anything but tensor and array constructors.

    Read statically (torch's disassembly of each pickle), nothing is unpickled. Accelerate reads its own files
    with weights_only=True but unpickles registered objects (custom_checkpoint_*.pkl) in full, which this code
    never writes, and it skips RNG states it cannot read without a word, so a missing one is refused too.
    """
    import torch
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    if foreign := sorted(p.name for p in state.glob("custom_checkpoint_*.pkl")):
        raise RunFolderError(f"{state}: refused to load {', '.join(foreign)}: pickles this version never writes "
                             "(an older version's state, or planted) and that could run code; a saved state never "
                             "holds code: start afresh with --overwrite_output_dir")
    rng = state / f"random_states_{process_index}.pkl"
    if not rng.is_file():
        raise RunFolderError(f"{rng}: missing; without it a resume would not repeat the run's dropout")
    for path in sorted(p for p in state.iterdir() if p.suffix in (".pkl", ".bin")):
        try:
            with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as err:  # not a torch.save zip file: truncated, or another kind of pickle
            unsafe = [f"unreadable ({type(err).__name__})"]
        if unsafe:
            raise RunFolderError(f"{path}: refused to load: it would call {', '.join(unsafe[:3])}; a saved state "
                                 "holds tensors and numbers only, never code, so this state cannot be trusted")


def load_state(accelerator, state: Path, *, progress, scheduler) -> None:
    """Resume from `state`: Accelerate's files (checked by check_no_code first), and training.json."""
    record = read_json(state / TRAINING_STATE)
    if not isinstance(record, dict) or record.get("format") != TRAINING_STATE_FORMAT:
        raise RunFolderError(f"{state / TRAINING_STATE}: missing or of another format (a state saved by an older "
                             "version?); this state cannot be resumed: start afresh with --overwrite_output_dir")
    check_no_code(state, process_index=accelerator.process_index)
    accelerator.load_state(str(state))
    progress.load_state_dict(record["progress"])
    scheduler.load_state_dict(record["scheduler"])


def train_log(output_dir: str | os.PathLike, *, before_epoch: int) -> list[dict]:
    """The epochs train_log.jsonl holds before `before_epoch` (a resumed run trains the later ones again)."""
    path = Path(output_dir) / TRAIN_LOG
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["epoch"] < before_epoch]


def write_train_log(output_dir: str | os.PathLike, records: list[dict]) -> None:
    """train_log.jsonl, one line per epoch, rewritten whole: a kill never leaves half a line."""
    atomic_write_text(Path(output_dir) / TRAIN_LOG, "".join(json.dumps(record) + "\n" for record in records))


def read_final_metrics(output_dir: str | os.PathLike) -> dict | None:
    """final_metrics.json of a finished run, or None."""
    return read_json(Path(output_dir) / FINAL_METRICS)


def write_final_metrics(output_dir: str | os.PathLike, results: dict) -> None:
    atomic_write_json(Path(output_dir) / FINAL_METRICS, results)
