"""Train the ranking head on frozen DINOv2 features.

    accelerate launch train.py --config configs/baseline.json
    python train.py --config configs/demo.json [--resume true] [--key value ...]

Reads DATA_DIR/metadata.csv and its images. Backbone features come from the feature cache in
CACHE_DIR (extracted once, docs/design.md 7); the head trains on all cross-tier pairs within each batch.
Writes into OUTPUT_DIR: config.json, splits.csv, train_log.jsonl (one line per epoch),
checkpoints/best/ and checkpoints/top/ (head.safetensors + head.json), state/ (Accelerate state for
--resume), calibration.json, final_metrics.json and the wandb run.
"""

import dataclasses
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from config import parse_config, print_config, save_config
from data import check_no_test_leak
from images import PREPROCESSING_VERSION
from metrics import fit_calibration, in_batch_pair_loss, pair_margin_loss, pairwise_accuracy, tier_ranks
from model import RankingHead, head_meta, load_head, save_head
from modelcard import write_model_card
from runfolder import (
    RunFolderError,
    atomic_write_text,
    check_fresh_start,
    check_resume,
    check_same_data,
    plain_modes,
    remove_run,
    write_record,
)
from tracking import start_tracking
from workflow import (
    backbone_for,
    check_data_dir,
    cpu_fallback_note,
    load_split_features,
    load_table_for,
    locked_run_folder,
    make_accelerator,
    sample_pairs_table,
    script_errors,
)


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


def save_training_state(accelerator: Accelerator, progress: Progress, state_dir: Path) -> None:
    """Accelerate state into a temporary directory renamed into place: a kill leaves the last good one."""
    name = f"epoch{progress.epoch:04d}-batch{progress.batches_done:06d}"
    tmp = state_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        plain_modes(tmp)  # Accelerate writes the head's weights through safetensors, mode 0600
        shutil.rmtree(state_dir / name, ignore_errors=True)
        tmp.rename(state_dir / name)
        for old in sorted(p for p in state_dir.iterdir() if p.name != name):
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def saved_state(cfg, out: Path) -> Path | None:
    """The state to resume from: --resume_from_checkpoint, else the latest one saved (None: start afresh)."""
    state_dir = out / "state"
    if cfg.resume_from_checkpoint:
        state = Path(cfg.resume_from_checkpoint)
        if not state.is_dir() or state.resolve().parent != state_dir.resolve():
            raise RunFolderError(f"--resume_from_checkpoint {state}: not a saved state of {out} "
                                 f"(those are {state_dir}/epoch...)")
        return state
    states = sorted(p for p in state_dir.glob("epoch*") if p.is_dir()) if state_dir.exists() else []
    return states[-1] if states else None


def train_epoch(accelerator: Accelerator, head, optimizer, train_x: torch.Tensor, train_r: torch.Tensor,
                progress: Progress, *, batch_size: int, margin: float, seed: int, stop: list,
                pair_loss: str = "margin") -> bool:
    """One pass over the training images, the loss over every cross-tier pair within each batch.

    Starts at progress.batches_done (mid-epoch resume); returns False when `stop` fills (Ctrl-C),
    after the batch in hand. Every process takes the whole batch: training on cached features costs
    seconds, and sharding a batch would change which pairs are compared, so N processes give one
    process's result.
    """
    head.train()
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed + progress.epoch))
    for step, batch in enumerate(order.split(batch_size)):
        if step < progress.batches_done:
            continue
        with accelerator.accumulate(head):
            x, r = train_x[batch].to(accelerator.device), train_r[batch].to(accelerator.device)
            with accelerator.autocast():
                loss = in_batch_pair_loss(head(x).float(), r, margin, pair_loss)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        progress.epoch_loss_sum += loss.item()
        progress.batches_done = step + 1
        if stop:
            return False
    return True


def keep_top_k(head, meta: dict, progress: Progress, val_acc: float, top_k: int, out: Path) -> None:
    """REQ-O-005: the top_k checkpoints by validation accuracy, for ensembles."""
    if top_k <= 0 or (len(progress.top) >= top_k and val_acc <= min(progress.top)[0]):
        return
    save_head(head, out / f"epoch{progress.epoch:04d}", meta)
    progress.top = sorted(progress.top + [(val_acc, progress.epoch)], key=lambda t: (-t[0], t[1]))
    for _, epoch in progress.top[top_k:]:
        shutil.rmtree(out / f"epoch{epoch:04d}", ignore_errors=True)
    progress.top = progress.top[:top_k]


def validate(accelerator: Accelerator, head, val_x: torch.Tensor, val_r: torch.Tensor, val_rows, progress: Progress,
             *, cfg, meta: dict) -> dict:
    """REQ-E-004: validation loss and pairwise accuracy; best and top-k checkpoints; patience count."""
    head.eval()
    with torch.no_grad():
        val_scores = head(val_x.to(accelerator.device)).float().cpu()
    val_loss = pair_margin_loss(val_scores, val_r, cfg.margin, loss=cfg.loss)
    val_acc, _ = pairwise_accuracy(val_scores.numpy(), val_rows.tier.to_numpy())
    record = {"epoch": progress.epoch, "train/loss": progress.epoch_loss_sum / max(1, progress.batches_done),
              "val/loss": val_loss, "val/pairwise_acc": val_acc}
    out, unwrapped = Path(cfg.output_dir) / "checkpoints", accelerator.unwrap_model(head)
    meta = meta | {"epoch": progress.epoch, "val_pairwise_acc": val_acc}
    if val_acc > progress.best_val_acc:  # REQ-E-005, REQ-N-005: saved only after a validation
        progress.best_val_acc, record["best"] = val_acc, True
        if accelerator.is_main_process:
            save_head(unwrapped, out / "best", meta)
        picks = np.random.default_rng(cfg.seed).permutation(len(val_rows))[:2 * cfg.sample_pairs]
        sample_pairs_table(accelerator, val_rows, val_scores, picks, progress.epoch)
    if accelerator.is_main_process:
        keep_top_k(unwrapped, meta, progress, val_acc, cfg.top_k, out / "top")
    if val_loss < progress.best_val_loss:
        progress.best_val_loss, progress.stale_epochs = val_loss, 0
    else:
        progress.stale_epochs += 1
    return record


def stop_reason(progress: Progress, cfg, next_lr: float) -> str | None:
    """Why training ends after the epoch just done (REQ-S-002, REQ-S-003), or None to go on."""
    if progress.epoch >= cfg.epochs:
        return f"reached {cfg.epochs} epochs"
    if progress.stale_epochs >= cfg.patience:
        return f"early stop: val loss not improved for {cfg.patience} epochs"
    if next_lr < cfg.min_lr:
        return f"learning rate {next_lr:.2e} below min_lr {cfg.min_lr:.0e}"
    return None


def training_function(cfg, phase) -> dict:
    accelerator = make_accelerator(cfg)
    out, config = Path(cfg.output_dir), dataclasses.asdict(cfg)
    log = accelerator.print
    cpu_fallback_note(cfg, accelerator)
    set_seed(cfg.seed)  # REQ-U-004, REQ-N-003
    resume = cfg.resume or bool(cfg.resume_from_checkpoint)
    if resume and cfg.overwrite_output_dir:
        raise RunFolderError("--resume continues the run in output_dir, --overwrite_output_dir deletes it: pass one")
    with locked_run_folder(cfg, accelerator, "train.py"):
        # Cheap checks first: the settings, before hours of image checks and extraction.
        record = check_resume(out, config) if resume else check_fresh_start(out, config,
                                                                             overwrite=cfg.overwrite_output_dir)
        state = saved_state(cfg, out) if resume else None
        if record and (out / "final_metrics.json").is_file():
            finished = json.loads((out / "final_metrics.json").read_text())
            log(f"{out} holds a finished run ({finished['stop_reason']}); nothing to resume")
            return finished
        # The data folder, then the backbone, then the image scan: a mistyped path, an unreachable hub or an
        # unsupported model fails in seconds, not after every image was checked.
        check_data_dir(cfg, accelerator)
        backbone = backbone_for(cfg, accelerator)
        if record and record["backbone_id"] != backbone.id:
            raise RunFolderError(f"cannot resume {out}: backbone weights {backbone.id} differ from the run's "
                                 f"{record['backbone_id']} ({cfg.backbone})")
        table = load_table_for(cfg, accelerator)
        if record:
            check_same_data(out, table)
        # REQ-N-001: guards, not conventions, before anything is written
        check_no_test_leak(table[table.split == "train"], table)
        check_no_test_leak(table[table.split == "val"], table)
        if accelerator.is_main_process:
            if cfg.overwrite_output_dir and not resume:
                removed = remove_run(out)
                log(f"--overwrite_output_dir: deleted the previous run's {', '.join(removed) or 'nothing'}")
            print_config(cfg)
            save_config(cfg, out / "config.json")
            write_record(out, config=config, table=table, stage="train", backbone_id=backbone.id,
                         preprocessing=PREPROCESSING_VERSION)
        accelerator.wait_for_everyone()
        return train_and_test(cfg, accelerator, table, backbone, state, phase)


def train_and_test(cfg, accelerator: Accelerator, table, backbone, state: Path | None, phase) -> dict:
    out, log = Path(cfg.output_dir), accelerator.print
    train_rows, val_rows = table[table.split == "train"], table[table.split == "val"]
    phase.kept = f"the run's settings in {out}; extracted features in {cfg.cache_dir}"
    _, (train_x, val_x) = load_split_features(cfg, [train_rows, val_rows], accelerator, backbone=backbone)
    train_r = torch.from_numpy(tier_ranks(train_rows.tier))
    val_r = torch.from_numpy(tier_ranks(val_rows.tier))

    set_seed(cfg.seed)  # again: extraction may or may not have drawn random numbers (cache hits)
    head = RankingHead(input_dim=train_x.shape[1], hidden_dim=cfg.hidden_dim, proj_dim=cfg.proj_dim,
                       dropout=cfg.dropout, score_head=cfg.score_head)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)  # REQ-O-002
    # The scheduler is registered, not prepared: prepared, it steps once per process per call.
    head, optimizer = accelerator.prepare(head, optimizer)
    progress = Progress()
    accelerator.register_for_checkpointing(scheduler, progress)
    state_dir = out / "state"
    if state is not None:  # REQ-S-005
        accelerator.load_state(str(state))
        log(f"resumed from {state} (epoch {progress.epoch}, batch {progress.batches_done})")
    elif cfg.resume:
        log(f"--resume: no saved state in {state_dir}, starting from scratch")
    log_path = out / "train_log.jsonl"
    # Epochs after the resumed state are run again: their lines go.
    lines = log_path.read_text().splitlines() if state is not None and log_path.exists() else []
    log_lines = [line for line in lines if json.loads(line)["epoch"] < progress.epoch]
    start_tracking(accelerator, cfg, job_type="train")
    meta = head_meta(cfg, backbone_id=backbone.id, input_dim=train_x.shape[1], patch_size=backbone.patch_size)

    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True))
    while progress.stop_reason is None:
        if train_epoch(accelerator, head, optimizer, train_x, train_r, progress, batch_size=cfg.batch_size,
                       margin=cfg.margin, seed=cfg.seed, stop=interrupted, pair_loss=cfg.loss):
            lr = scheduler.get_last_lr()[0]  # the rate this epoch trained with
            scheduler.step()
            record = validate(accelerator, head, val_x, val_r, val_rows, progress, cfg=cfg, meta=meta)
            record["lr"] = lr
            accelerator.log({k: v for k, v in record.items() if k not in ("epoch", "best")}, step=progress.epoch)
            log(f"epoch {progress.epoch:3d} | train loss {record['train/loss']:.4f} | val loss {record['val/loss']:.4f}"
                f" | val acc {record['val/pairwise_acc']:.4f} | lr {lr:.2e}{' | best' if 'best' in record else ''}")
            if accelerator.is_main_process:
                log_lines.append(json.dumps(record))  # rewritten whole: a kill never leaves half a line
                atomic_write_text(log_path, "".join(line + "\n" for line in log_lines))
            progress.epoch, progress.batches_done, progress.epoch_loss_sum = progress.epoch + 1, 0, 0.0
            progress.stop_reason = stop_reason(progress, cfg, scheduler.get_last_lr()[0])
        save_training_state(accelerator, progress, state_dir)  # the stop decision is saved with the state
        if interrupted:
            log(f"interrupted: state saved in {state_dir}; continue with --resume")
            accelerator.end_training()
            raise SystemExit(130)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log(progress.stop_reason)
    phase.kept = f"the trained run in {out}; --resume scores the test split"
    results = test_best(cfg, accelerator, table, backbone, progress)
    accelerator.end_training()
    return results


def test_best(cfg, accelerator: Accelerator, table, backbone, progress: Progress) -> dict:
    """REQ-E-006: the test split is touched once, after training, with the best checkpoint."""
    out, frames = Path(cfg.output_dir), [table[table.split == s] for s in ("train", "val", "test")]
    best, best_meta = load_head(out / "checkpoints" / "best", expect={"backbone_id": backbone.id,
                                                                      "image_size": cfg.image_size})
    _, features = load_split_features(cfg, frames, accelerator, backbone=backbone)
    results = {"stop_reason": progress.stop_reason, "epochs_run": progress.epoch, "best_epoch": best_meta["epoch"]}
    best = best.to(accelerator.device)
    with torch.no_grad():
        for name, x, rows in zip(("train", "val", "test"), features, frames):
            scores = best(x.to(accelerator.device)).float().cpu()
            acc, pairs = pairwise_accuracy(scores.numpy(), rows.tier.to_numpy())
            results[f"{name}/pairwise_acc"], results[f"{name}/pairs"] = acc, pairs
            if name == "val":
                calibration = fit_calibration(scores.numpy(), rows.tier.to_numpy())
    accelerator.log({k: v for k, v in results.items() if "/" in k}, step=progress.epoch)
    if accelerator.is_main_process:
        atomic_write_text(out / "calibration.json", json.dumps(calibration, indent=2) + "\n")
        atomic_write_text(out / "final_metrics.json", json.dumps(results, indent=2) + "\n")
        write_model_card(out)
    accelerator.print(f"best epoch {results['best_epoch']} | train acc {results['train/pairwise_acc']:.4f} | "
                      f"val acc {results['val/pairwise_acc']:.4f} | test acc {results['test/pairwise_acc']:.4f} "
                      f"({results['test/pairs']} test pairs)")
    return results


def main() -> None:
    cfg, _ = parse_config(__doc__, keys=("run", "data", "backbone", "head", "train", "tracking"))
    with script_errors() as phase:
        training_function(cfg, phase)


if __name__ == "__main__":
    main()
