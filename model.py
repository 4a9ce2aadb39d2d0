"""The model: a frozen DINO backbone, the spec's projector (4.2) and a score head; how the head is trained,
and how it is saved and loaded.

The backbone is frozen and there is no augmentation, so the head trains on cached backbone features and the
trained part is `RankingHead` alone; `ArtRanker` (pipeline/ranker.py) puts backbone and heads back together for
export and prediction. `HeadTraining` is the one training procedure (optimizer, schedule, epochs, stop rules, best
epoch): train.py, crossval.py and the benchmarks all run it.
"""

import copy
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from pipeline.backbones import Backbone, DinoFeatureExtractor, resolve_backbone
from pipeline.cli import bar, make_accelerator
from pipeline.comparisons import comparisons_per_step, index_pairs
from pipeline.errors import ArtrankError
from pipeline.features import table_features
from pipeline.files import atomic_dir, atomic_write_json
from pipeline.images import PREPROCESSING_VERSION
from pipeline.losses import comparison_loss, split_objective, tier_objective
from pipeline.metrics import pairwise_accuracy
from pipeline.novelty import read_reference
from pipeline.ordinal import is_tier_model
from pipeline.provenance import MADE_FROM, load_artifact, run_origin
from pipeline.ranker import ArtRanker, select_features
from pipeline.runs import chosen_checkpoint, top_members
from pipeline.tables import tier_ranks
from pipeline.tier_head import TierThresholds

HEAD_FORMAT = 2  # bumped when head.json changes meaning; older heads are refused, not misread (2: tier_model)


def load_backbone(cfg, accelerator) -> Backbone:
    """The config's frozen backbone, found and keyed by its weights (BackboneError when it cannot be used)."""
    return resolve_backbone(cfg.backbone, random_backbone=cfg.random_backbone, accelerator=accelerator)


def features_of(cfg, tables: list, accelerator, *, backbone: Backbone) -> list[torch.Tensor]:
    """The head's input for the rows of each table, from the feature cache (what is missing is extracted)."""
    from datasets import concatenate_datasets

    together = concatenate_datasets([table.select_columns(["sha256", "path"]) for table in tables])
    cls_token, mean_patch = table_features(together, backbone=backbone, image_size=cfg.image_size,
                                           cache_dir=cfg.cache_dir, batch_size=cfg.extract_batch_size,
                                           num_workers=cfg.num_workers, accelerator=accelerator,
                                           track=bar(accelerator, "extracting features"), log=accelerator.print)
    return list(select_features(cls_token, mean_patch, cfg.feature).split([len(table) for table in tables]))


class Projector(nn.Module):
    """The spec's projector (4.2): 1024 -> 512 -> 256 with LayerNorm, GELU and dropout."""

    def __init__(self, input_dim: int = 1024, hidden_dim: int = 512, output_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
            nn.LayerNorm(output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class RankingHead(nn.Module):
    """Projector + score: higher is better.

    "norm" is the spec's -||emb|| (4.3). After the final LayerNorm that norm is about sqrt(256) before the
    affine part, so it has little freedom; "linear" reads a score off the embedding. A tier model also holds
    the ordered thresholds that turn its score into P(tier) (pipeline/ordinal.py); its output is the score
    all the same.
    """

    def __init__(self, *, input_dim: int, hidden_dim: int = 512, proj_dim: int = 256, dropout: float = 0.1,
                 score_head: str = "linear", tier_model: bool = False):
        super().__init__()
        self.projector = Projector(input_dim, hidden_dim, proj_dim, dropout)
        self.score_head = score_head
        self.linear = nn.Linear(proj_dim, 1) if score_head == "linear" else None
        self.tier_thresholds = TierThresholds() if tier_model else None

    def thresholds(self) -> torch.Tensor | None:
        """The tier model's three ordered thresholds (worst tier first), or None for a head that is not one."""
        return None if self.tier_thresholds is None else self.tier_thresholds()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedding = self.projector(features)
        if self.linear is None:
            return -torch.linalg.vector_norm(embedding, dim=-1)
        return self.linear(embedding).squeeze(-1)


@torch.no_grad()
def score_features(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """One score per row of cached features, in fp32 on the CPU."""
    head.eval()
    return head(features.to(next(head.parameters()).device)).float().cpu()


# ---------------------------------------------------------------- the training procedure

class Progress:
    """Where training stands; saved with the Accelerate state so --resume continues exactly."""

    def __init__(self):
        self.epoch, self.batches_done, self.epoch_loss_sum = 0, 0, 0.0
        self.best_val_loss, self.best_val_acc, self.stale_epochs = float("inf"), -1.0, 0
        self.top: list[tuple[float, int]] = []  # (val accuracy, epoch) of the kept checkpoints
        self.stop_reason: str | None = None  # set once training has ended: a resume then only finishes up

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)
        self.top = [tuple(t) for t in self.top]

    def keep_top_k(self, val_acc: float, top_k: int) -> tuple[bool, list[int]]:
        """Whether this epoch joins the top_k by validation accuracy, kept for ensembles (an earlier epoch
        wins a tie), and the epochs it pushes out."""
        if top_k <= 0 or (len(self.top) >= top_k and val_acc <= min(self.top)[0]):
            return False, []
        self.top = sorted(self.top + [(val_acc, self.epoch)], key=lambda t: (-t[0], t[1]))
        dropped = [epoch for _, epoch in self.top[top_k:]]
        self.top = self.top[:top_k]
        return True, dropped


def selection_rules(cfg) -> str:
    """The two criteria of the procedure, said once: they differ, and a reader of the epoch lines should know."""
    return (f"best checkpoint: the epoch of highest val accuracy (the first of equals); early stop: "
            f"{cfg.patience} epochs without a lower val loss")


def stop_reason(progress: Progress, cfg, next_lr: float) -> str | None:
    """Why training ends after the epoch just done, or None to go on."""
    if progress.epoch >= cfg.epochs:
        return f"reached {cfg.epochs} epochs"
    if progress.stale_epochs >= cfg.patience:
        return f"early stop: val loss not improved for {cfg.patience} epochs"
    if next_lr < cfg.min_lr:
        return f"learning rate {next_lr:.2e} below min_lr {cfg.min_lr:.0e}"
    return None


def train_epoch(accelerator, head, optimizer, train_x: torch.Tensor, train_r: torch.Tensor, progress: Progress, *,
                batch_size: int, margin: float, loss: str, ordinal_weight: float, seed: int,
                comparisons: dict | None = None, comparison_weight: float = 0.0, interruption=None) -> bool:
    """One pass over the training images, the loss over every cross-tier pair within each batch (and the
    ordinal loss of its images, for a tier model), plus comparison_weight times the loss of this step's share
    of the teachers' `comparisons` (index pairs into train_x: comparisons.index_pairs), every one of them once
    an epoch (comparisons_per_step).

    Starts at progress.batches_done (mid-epoch resume); returns False when `interruption` is set, after the
    batch in hand. Every process takes the whole batch: training on cached features costs seconds, and
    sharding a batch would change which pairs are compared, so N processes give one process's result.
    """
    head.train()
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed + progress.epoch))
    batches = order.split(batch_size)
    judged = comparison_weight > 0 and comparisons is not None and len(comparisons["a"]) > 0
    shares = comparisons_per_step(len(comparisons["a"]), len(batches), seed, progress.epoch) if judged else None
    for step, batch in enumerate(batches):
        if step < progress.batches_done:
            continue
        with accelerator.accumulate(head):
            x, r = train_x[batch].to(accelerator.device), train_r[batch].to(accelerator.device)
            with accelerator.autocast():
                batch_loss = tier_objective(head(x).float(), r, accelerator.unwrap_model(head).thresholds(), loss=loss,
                                            margin=margin, ordinal_weight=ordinal_weight)
                if judged and len(shares[step]):
                    batch_loss = batch_loss + comparison_weight * step_comparison_loss(
                        head, train_x, {k: comparisons[k][shares[step]] for k in ("a", "b", "outcome", "weight")},
                        margin, loss, accelerator.device)
            accelerator.backward(batch_loss)
            optimizer.step()
            optimizer.zero_grad()
        progress.epoch_loss_sum += batch_loss.item()
        progress.batches_done = step + 1
        if interruption:
            return False
    return True


def step_comparison_loss(head, train_x: torch.Tensor, share: dict, margin: float, loss: str, device) -> torch.Tensor:
    """The comparison loss of one step's comparisons (numpy index pairs into train_x), both sides in one pass."""
    index = torch.from_numpy(np.concatenate([share["a"], share["b"]]))
    scores = head(train_x[index].to(device)).float()
    score_a, score_b = scores.split(len(share["a"]))
    return comparison_loss(score_a, score_b, torch.from_numpy(share["outcome"]).to(device),
                           torch.from_numpy(share["weight"]).to(device), margin, loss)


class HeadTraining:
    """A RankingHead trained on cached features: AdamW, a cosine schedule over cfg.epochs, every epoch
    validated, early stopping on the validation loss (the training objective over the validation split), a stop
    below min_lr; the best epoch is the first with the highest validation accuracy."""

    def __init__(self, cfg, accelerator, *, input_dim: int):
        self.cfg, self.accelerator = cfg, accelerator
        set_seed(cfg.seed)  # the head's initial weights and its dropout: the same seed, the same run
        head = RankingHead(input_dim=input_dim, hidden_dim=cfg.hidden_dim, proj_dim=cfg.proj_dim, dropout=cfg.dropout,
                           score_head=cfg.score_head, tier_model=is_tier_model(cfg))
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        # The scheduler is not prepared: prepared, it steps once per process per call.
        self.head, self.optimizer = accelerator.prepare(head, optimizer)
        self.progress = Progress()

    def run(self, train_x: torch.Tensor, train_tiers, val_x: torch.Tensor, val_tiers, *, comparisons=None,
            after_epoch=None, after_step=None, interruption=None) -> bool:
        """Train until a stop rule fires; returns False when `interruption` was set (after the batch in hand).

        after_epoch(record, val_scores) follows each validated epoch; record holds the epoch, the train and
        validation losses, the validation accuracy, "best" when it is the best epoch so far, and the rate the
        epoch trained with. `comparisons` are the training split's (train_epoch); validation and the best epoch
        stay on the tier pairs, as without them. after_step() follows each epoch, and an interruption: where a
        run saves its state.
        """
        cfg, progress = self.cfg, self.progress
        train_r, val_r = torch.from_numpy(tier_ranks(train_tiers)), torch.from_numpy(tier_ranks(val_tiers))
        head = self.unwrapped_head()
        if head.tier_thresholds is not None and progress.epoch == 0 and progress.batches_done == 0:
            head.tier_thresholds.place(score_features(head, train_x), train_r)  # eval mode: draws no random number
        while progress.stop_reason is None:
            if train_epoch(self.accelerator, self.head, self.optimizer, train_x, train_r, progress,
                           batch_size=cfg.batch_size, margin=cfg.margin, loss=cfg.loss,
                           ordinal_weight=cfg.ordinal_weight, seed=cfg.seed,
                           comparisons=comparisons, comparison_weight=cfg.comparison_weight,
                           interruption=interruption):
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                val_scores = score_features(self.head, val_x)
                val_loss = split_objective(val_scores, val_r, self.unwrapped_head().thresholds(), loss=cfg.loss,
                                           margin=cfg.margin, ordinal_weight=cfg.ordinal_weight)
                val_acc, _ = pairwise_accuracy(val_scores.numpy(), val_tiers)
                train_loss = progress.epoch_loss_sum / max(1, progress.batches_done)
                record = {"epoch": progress.epoch, "train/loss": train_loss, "val/loss": val_loss,
                          "val/pairwise_acc": val_acc}
                if val_acc > progress.best_val_acc:  # strictly: of equally good epochs the first stays the best
                    progress.best_val_acc, record["best"] = val_acc, True
                record["lr"] = lr
                if after_epoch is not None:
                    after_epoch(record, val_scores)
                if val_loss < progress.best_val_loss:
                    progress.best_val_loss, progress.stale_epochs = val_loss, 0
                else:
                    progress.stale_epochs += 1
                progress.epoch, progress.batches_done, progress.epoch_loss_sum = progress.epoch + 1, 0, 0.0
                progress.stop_reason = stop_reason(progress, cfg, self.scheduler.get_last_lr()[0])
            if after_step is not None:
                after_step()
            if interruption:
                return False
        return True

    def unwrapped_head(self) -> RankingHead:
        return self.accelerator.unwrap_model(self.head)


def fit_head(cfg, fit_x: torch.Tensor, fit_tiers: np.ndarray, stop_x: torch.Tensor, stop_tiers: np.ndarray,
             comparisons: dict | None = None) -> tuple[RankingHead, int, int]:
    """The head train.py would train, on the fitting rows, stopped and chosen on the stopping rows; kept in
    memory (cross-validation's cells, the review's fold heads). Returns (best head, best epoch, epochs run)."""
    training = HeadTraining(cfg, make_accelerator(cfg), input_dim=fit_x.shape[1])  # its step counter starts at 0
    best = {}

    def keep_best(record: dict, _) -> None:
        if record.get("best"):
            best.update(epoch=record["epoch"], state=copy.deepcopy(training.unwrapped_head().state_dict()))

    training.run(fit_x, fit_tiers, stop_x, stop_tiers, comparisons=comparisons, after_epoch=keep_best)
    head = training.unwrapped_head()
    head.load_state_dict(best["state"])
    return head.eval(), best["epoch"], training.progress.epoch


def fold_heads(cfg, features: torch.Tensor, rows, comparisons, *, folds: int):
    """The review's fold heads (pipeline/out_of_fold.py) on the train+val works `rows` (a DataFrame in the order
    of `features`): artist folds, and per fold fit_head with the comparisons among its fitting rows."""
    from pipeline.out_of_fold import fold_parts, from_scores
    from pipeline.selection import crossval_folds

    fold_of = crossval_folds(rows, folds=folds, seed=cfg.seed)
    tiers, ids, heads = rows["tier"].to_numpy(object), rows["image_id"].to_numpy(object), []
    for fit, stop in fold_parts(fold_of, folds):
        head, _, _ = fit_head(cfg, features[fit], tiers[fit], features[stop], tiers[stop],
                              comparisons=index_pairs(comparisons, ids[fit], cfg.comparison_raters))
        thresholds = head.thresholds()
        heads.append((score_features(head, features).numpy(), None if thresholds is None else thresholds.tolist()))
    return from_scores(fold_of, tiers, heads)

# ---------------------------------------------------------------- saved heads

def head_identity(cfg, backbone: Backbone) -> dict:
    """What a head must have been trained on to be fed by this config and backbone."""
    return dict(backbone_id=backbone.id, image_size=cfg.image_size, patch_size=backbone.patch_size,
                preprocessing=PREPROCESSING_VERSION, feature=cfg.feature, tier_model=is_tier_model(cfg))


def head_meta(cfg, backbone: Backbone, *, input_dim: int) -> dict:
    """What a head needs to be rebuilt and fed correctly, and the run it was trained in, saved beside its
    weights."""
    return dict(format=HEAD_FORMAT, backbone=cfg.backbone, **head_identity(cfg, backbone), input_dim=input_dim,
                hidden_dim=cfg.hidden_dim, proj_dim=cfg.proj_dim, dropout=cfg.dropout, score_head=cfg.score_head,
                **{MADE_FROM: run_origin(cfg.output_dir)})


def save_head(head: RankingHead, directory: str | os.PathLike, meta: dict) -> None:
    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(Path(tmp) / "head.safetensors"))
        atomic_write_json(Path(tmp) / "head.json", meta)


def load_head(directory: str | os.PathLike, *, identity: dict, run: dict) -> tuple[RankingHead, dict]:
    """A saved head, refused unless it was trained in `run` (run_origin of the reader's run folder: a head of
    another run has seen other training images) and made for `identity` (head_identity of the caller's config
    and backbone): another backbone, image size, preprocessing or feature would feed it other numbers."""
    directory = Path(directory)
    meta_path = directory / "head.json"
    meta = load_artifact(meta_path, what="checkpoint of train.py", expected=run, format_version=HEAD_FORMAT,
                         required=True)
    for key, value in identity.items():
        if meta.get(key) != value:
            raise ArtrankError(f"{meta_path}: checkpoint made with {key}={meta.get(key)!r}, but this run uses "
                               f"{key}={value!r}; retrain or use the matching config")
    head = RankingHead(input_dim=meta["input_dim"], hidden_dim=meta["hidden_dim"], proj_dim=meta["proj_dim"],
                       dropout=meta["dropout"], score_head=meta["score_head"], tier_model=meta["tier_model"])
    try:
        head.load_state_dict(load_file(str(directory / "head.safetensors")))
    except (OSError, RuntimeError) as err:  # missing, truncated, or weights of another shape
        raise ArtrankError(f"{directory / 'head.safetensors'}: does not load ({type(err).__name__}: "
                           f"{(str(err).splitlines() or [''])[0]})") from None
    return head.eval(), meta


def load_ranker(cfg, accelerator, *, readout: bool = False) -> tuple[ArtRanker, dict, Path]:
    """The run's ranker in PyTorch: the config's backbone and the chosen checkpoint's head; with `readout` also
    the top-k checkpoints' heads (the score's spread) and the training features its calibration's novelty
    threshold was fitted with (pipeline/ranker.py). Returns (ranker, head.json, folder)."""
    from pipeline.calibration import read_calibration

    checkpoint = chosen_checkpoint(cfg)
    backbone = load_backbone(cfg, accelerator)
    identity, run = head_identity(cfg, backbone), run_origin(cfg.output_dir)
    head, meta = load_head(checkpoint, identity=identity, run=run)
    extractor = DinoFeatureExtractor.from_pretrained(str(backbone.path))
    if not readout:
        return ArtRanker(extractor, head, meta["feature"]).eval(), meta, checkpoint
    members = [load_head(m, identity=identity, run=run)[0] for m in top_members(cfg.output_dir)]
    fitted = (read_calibration(cfg.output_dir, checkpoint=checkpoint) or {}).get("novelty")
    nearest = read_reference(cfg.output_dir, fitted)
    return ArtRanker(extractor, head, meta["feature"], members, nearest).eval(), meta, checkpoint
