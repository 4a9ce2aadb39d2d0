"""The steps the scripts share: an Accelerator for the config, the checked image table, split features."""

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm

from data import TIER_RANK, DataError, load_table
from features import Backbone, resolve_backbone, table_features
from images import PREPROCESSING_VERSION, open_image
from model import ArtRanker, DINOv2FeatureExtractor, load_head, select_features
from tracking import wandb_run


def quiet_libraries() -> None:
    """Keep the console to our own lines and bars: the libraries' per-file bars say nothing useful."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


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


def load_table_for(cfg, accelerator: Accelerator) -> pd.DataFrame:
    """The checked, split image table; the demo data set is generated first when asked for and missing."""
    if cfg.demo_data and not Path(cfg.data_dir).exists():  # never write into a folder the user made
        from demo_data import generate_demo_dataset

        if accelerator.is_main_process:
            generate_demo_dataset(cfg.data_dir, seed=cfg.seed)
        accelerator.wait_for_everyone()
    try:
        table, skipped = load_table(cfg.data_dir, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                    seed=cfg.seed, skip_bad_images=cfg.skip_bad_images,
                                    track=bar(accelerator, "checking images"), cache_dir=cfg.cache_dir)
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    for message in skipped:
        accelerator.print(f"warning: skipped {message}")
    return table


def load_split_features(cfg, frames: list[pd.DataFrame], accelerator: Accelerator, *,
                        backbone: Backbone | None = None) -> tuple[Backbone, list[torch.Tensor]]:
    """The head's input features for each frame, from the feature cache (extracting what is missing).

    Pass `backbone` when it is already resolved: resolving hashes its weights (1.2 GB for ViT-L).
    """
    backbone = backbone or resolve_backbone(cfg.backbone, random_backbone=cfg.random_backbone,
                                            accelerator=accelerator)
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
    backbone = resolve_backbone(cfg.backbone, random_backbone=cfg.random_backbone, accelerator=accelerator)
    try:
        head, meta = load_head(checkpoint, expect={"backbone_id": backbone.id, "image_size": cfg.image_size,
                                                   "preprocessing": PREPROCESSING_VERSION})
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    extractor = DINOv2FeatureExtractor.from_pretrained(str(backbone.path))
    return ArtRanker(extractor, head, meta["feature"]).eval(), meta, checkpoint
