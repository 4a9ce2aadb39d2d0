"""Experiment tracking through Accelerate's wandb tracker (REQ-U-003, REQ-N-004).

Every run is tracked; without credentials wandb runs offline (synced later with `wandb sync`),
so it never prompts, blocks or needs the network.
"""

import dataclasses
import netrc
import os
from pathlib import Path

from accelerate import Accelerator


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str) -> str:
    """The config's choice, else WANDB_MODE, else online only with credentials."""
    mode = requested or os.environ.get("WANDB_MODE", "")
    if mode in ("online", "offline"):
        return mode
    return "online" if has_wandb_credentials() else "offline"


def start_tracking(accelerator: Accelerator, cfg, *, job_type: str) -> str:
    """Start the wandb run of this script in OUTPUT_DIR/wandb; returns the mode used."""
    import wandb

    mode = wandb_mode(cfg.wandb_mode)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(cfg.wandb_project, config=dataclasses.asdict(cfg), init_kwargs={"wandb": dict(
        dir=cfg.output_dir, mode=mode, name=f"{Path(cfg.output_dir).name}-{job_type}", job_type=job_type,
        group=Path(cfg.output_dir).name, settings=wandb.Settings(console="off", silent=True))})
    return mode


def wandb_run(accelerator: Accelerator):
    """The live wandb run on the main process, else None (for tables and images)."""
    if not accelerator.is_main_process:
        return None
    return accelerator.get_tracker("wandb", unwrap=True)
