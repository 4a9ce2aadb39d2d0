"""The steps the scripts share: an Accelerator for the config, the run folder, the checked image table,
split features, and one-line errors."""

import contextlib
import functools
import logging
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm

from backbones import Backbone, DinoFeatureExtractor, resolve_backbone
from data import TIER_RANK, DataError, load_table, metadata_csv
from features import table_features
from images import PREPROCESSING_VERSION, open_image
from model import ArtRanker, load_head, select_features
from runfolder import RunFolderError, RunLock
from tracking import wandb_run

# The only folder the demo's data set is generated into: a mistyped --data_dir is an error, not a new data set.
DEMO_DATA_DIR = Path(__file__).resolve().parent / "data" / "demo"


def quiet_libraries() -> None:
    """Keep the console to our own lines and bars: the libraries' per-file bars say nothing useful.

    Transformers' LOAD REPORT stays: it is the one warning that says weights did not load.
    """
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    loading = logging.getLogger("transformers.modeling_utils")
    loading.setLevel(logging.WARNING)
    loading.addFilter(_errors_and_load_reports)


def _errors_and_load_reports(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or "LOAD REPORT" in record.getMessage()


def make_accelerator(cfg) -> Accelerator:
    quiet_libraries()
    cuda = PartialState().device.type == "cuda"
    return Accelerator(mixed_precision=cfg.mixed_precision if cuda else "no", log_with="wandb",
                       gradient_accumulation_steps=cfg.grad_accum_steps, project_dir=cfg.output_dir)


def cpu_fallback_note(cfg, accelerator: Accelerator) -> None:
    if accelerator.device.type != "cuda" and cfg.mixed_precision != "no":
        accelerator.print(f"note: no CUDA device, so {cfg.mixed_precision} mixed precision is off "
                          "and everything runs in fp32 (REQ-U-002 applies on GPUs)")


def bar(accelerator: Accelerator, desc: str):
    return functools.partial(tqdm, desc=desc, disable=not accelerator.is_local_main_process, dynamic_ncols=True)


def backbone_for(cfg, accelerator: Accelerator) -> Backbone:
    """The config's backbone; raises BackboneError (a ValueError) when unsupported or unreachable."""
    return resolve_backbone(cfg.backbone, random_backbone=cfg.random_backbone, accelerator=accelerator)


def check_data_dir(cfg, accelerator: Accelerator) -> None:
    """DATA_DIR has a metadata.csv (checked before anything expensive); the demo data set is generated
    first when asked for and missing."""
    if cfg.demo_data and not Path(cfg.data_dir).exists():
        if Path(cfg.data_dir).resolve() != DEMO_DATA_DIR:
            raise DataError(f"{cfg.data_dir}: not found (demo data is generated only into {DEMO_DATA_DIR})")
        from demo_data import generate_demo_dataset

        if accelerator.is_main_process:
            generate_demo_dataset(cfg.data_dir, seed=cfg.seed)
        accelerator.wait_for_everyone()
    metadata_csv(cfg.data_dir)


def load_table_for(cfg, accelerator: Accelerator) -> pd.DataFrame:
    """The checked, split image table (see check_data_dir for the demo data set)."""
    check_data_dir(cfg, accelerator)
    table, notes = load_table(cfg.data_dir, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                              seed=cfg.seed, skip_bad_images=cfg.skip_bad_images,
                              track=bar(accelerator, "checking images"), cache_dir=cfg.cache_dir)
    for message in notes:
        accelerator.print(f"warning: {message}")
    return table


class Phase:
    """What an interruption now keeps, for the one line that Ctrl-C or SIGTERM prints."""

    def __init__(self, kept: str = "nothing was written"):
        self.kept = kept


@contextlib.contextmanager
def script_errors():
    """Bad input, a refused run folder, Ctrl-C or SIGTERM: one line on stderr, no traceback.

    Yields a Phase; the script sets phase.kept as it goes. Exit status 1 for errors, 130 when interrupted.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's kill is a Ctrl-C
    phase = Phase()
    try:
        yield phase
    except KeyboardInterrupt:
        close_bars()
        print(f"interrupted: {phase.kept}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except (DataError, RunFolderError, FileNotFoundError, ValueError) as err:
        close_bars()
        raise SystemExit(f"error: {err}") from None


def close_bars() -> None:
    """Close the progress bars an exception left open: closed later, they would redraw below our line."""
    for open_bar in list(tqdm._instances):
        open_bar.close()


@contextlib.contextmanager
def locked_run_folder(cfg, accelerator: Accelerator, command: str):
    """Hold OUTPUT_DIR for this command alone (the main process locks; every process learns the outcome)."""
    from accelerate.utils import broadcast_object_list

    lock, refusal = RunLock(cfg.output_dir, command=command), None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except RunFolderError as err:
            refusal = str(err)
    (refusal,) = broadcast_object_list([refusal])
    if refusal:
        raise RunFolderError(refusal)
    failed = True
    try:
        yield
        failed = False
    finally:
        lock.release(failed=failed)


def load_split_features(cfg, frames: list[pd.DataFrame], accelerator: Accelerator, *,
                        backbone: Backbone | None = None) -> tuple[Backbone, list[torch.Tensor]]:
    """The head's input features for each frame, from the feature cache (extracting what is missing).

    Pass `backbone` when it is already resolved: resolving may ask the hub and hash new weights.
    """
    backbone = backbone or backbone_for(cfg, accelerator)
    together = pd.concat(frames)
    cls_token, mean_patch = table_features(together, backbone=backbone, image_size=cfg.image_size,
                                           cache_dir=cfg.cache_dir, batch_size=cfg.extract_batch_size,
                                           num_workers=cfg.num_workers, accelerator=accelerator,
                                           track=bar(accelerator, "extracting features"), log=accelerator.print)
    features = select_features(cls_token, mean_patch, cfg.feature)
    return backbone, list(features.split([len(f) for f in frames]))


def sample_pairs_table(accelerator: Accelerator, rows: pd.DataFrame, scores: torch.Tensor,
                       picks: np.ndarray, step: int) -> None:
    """REQ-O-003: a few validation pairs with their images and scores, in the tracker."""
    run = wandb_run(accelerator)
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["image_a", "image_b", "tier_a", "tier_b", "score_a", "score_b", "correct"])
    tiers, paths = rows.tier.to_numpy(), rows.path.to_numpy()
    for a, b in zip(picks[0::2], picks[1::2]):
        if tiers[a] == tiers[b]:
            continue
        thumbs = []
        for i in (a, b):
            image = open_image(paths[i])
            image.thumbnail((160, 160))
            thumbs.append(wandb.Image(image))
        a_better = TIER_RANK[tiers[a]] > TIER_RANK[tiers[b]]
        correct = bool(scores[a] > scores[b]) if a_better else bool(scores[b] > scores[a])
        table.add_data(*thumbs, tiers[a], tiers[b], float(scores[a]), float(scores[b]), correct)
    run.log({"val/sample_pairs": table}, step=step)


def load_ranker(cfg, accelerator) -> tuple[ArtRanker, dict, Path]:
    """The PyTorch ranker of the run's checkpoint: its backbone + head. Returns (ranker, head.json, dir)."""
    checkpoint = Path(cfg.checkpoint or Path(cfg.output_dir) / "checkpoints" / "best")
    backbone = backbone_for(cfg, accelerator)
    head, meta = load_head(checkpoint, expect={"backbone_id": backbone.id, "image_size": cfg.image_size,
                                               "preprocessing": PREPROCESSING_VERSION})
    extractor = DinoFeatureExtractor.from_pretrained(str(backbone.path))
    return ArtRanker(extractor, head, meta["feature"]).eval(), meta, checkpoint
