"""Experiment tracking through Accelerate's wandb tracker.

Every run is tracked. Online needs credentials and a reachable server; otherwise wandb runs offline
into OUTPUT_DIR/wandb and the run says where it went and the `wandb sync` command that uploads it.
A run is never untracked: WANDB_MODE=disabled (or dryrun, or WANDB_DISABLED) is refused, not obeyed.
"""

import atexit
import dataclasses
import netrc
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from .errors import ArtrankError
from .tables import TIER_RANK

MODES = ("online", "offline")
PROBE_SECONDS = 3.0


class TrackingError(ArtrankError):
    """A tracking setting that would leave the run untracked or cannot be understood."""


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"


def requested_mode(config_mode: str) -> str:
    """The mode asked for: the config's, else WANDB_MODE, else "" (decide by credentials).

    Raises TrackingError for a WANDB_MODE or WANDB_DISABLED that would switch tracking off.
    """
    env_mode = os.environ.get("WANDB_MODE", "")
    if env_mode and env_mode not in MODES:
        raise TrackingError(f"WANDB_MODE={env_mode}: every run is tracked, so only online or offline "
                            "is accepted; offline needs no account or network")
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        raise TrackingError(f"WANDB_DISABLED={os.environ['WANDB_DISABLED']}: every run is tracked; "
                            "unset it, or set WANDB_MODE=offline to track without an account or network")
    return config_mode or env_mode


def server_reachable(host: str, port: int = 443, timeout: float = PROBE_SECONDS) -> bool:
    """A TCP connection to the wandb server within `timeout` seconds (name lookup included)."""
    reached = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a lookup without network can block past any timeout
    thread.start()
    thread.join(timeout)
    return bool(reached)


def choose_mode(config_mode: str) -> tuple[str, str]:
    """(mode, why): online only with credentials and a server that answers, never a long wait."""
    mode = requested_mode(config_mode)
    if mode == "offline":
        return "offline", "asked for"
    if mode == "" and not has_wandb_credentials():
        return "offline", "no wandb credentials: set WANDB_API_KEY or run `wandb login`"
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    if not server_reachable(wandb_host(), url.port or (80 if url.scheme == "http" else 443)):
        return "offline", f"{wandb_host()} did not answer within {PROBE_SECONDS:.0f} s"
    return "online", "asked for" if mode else "wandb credentials found"


def sync_command(run_dir: Path) -> str:
    return f"wandb sync {run_dir}"


def start_tracking(accelerator, cfg, *, job_type: str) -> str:
    """Start the wandb run of this script in OUTPUT_DIR/wandb and say where it goes; returns the mode.

    For an offline run the `wandb sync` command is printed again when the program exits.
    """
    import wandb

    mode, why = choose_mode(cfg.wandb_mode)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(cfg.wandb_project, config=dataclasses.asdict(cfg), init_kwargs={"wandb": dict(
        dir=cfg.output_dir, mode=mode, name=f"{Path(cfg.output_dir).name}-{job_type}", job_type=job_type,
        group=Path(cfg.output_dir).name, settings=wandb.Settings(console="off", silent=True))})
    run = wandb_run(accelerator)
    if run is None:
        return mode
    run_dir = Path(run.dir).parent
    if mode == "online":
        accelerator.print(f"wandb: online ({why}): {run.url} (local copy in {run_dir})")
    else:
        accelerator.print(f"wandb: offline ({why}): run written to {run_dir}; upload with: {sync_command(run_dir)}")
        atexit.register(print, f"wandb: offline run in {run_dir}; upload it with: {sync_command(run_dir)}",
                        flush=True)
    return mode


def wandb_run(accelerator):
    """The live wandb run on the main process, else None (for tables and images)."""
    if not accelerator.is_main_process:
        return None
    return accelerator.get_tracker("wandb", unwrap=True)


def sample_pairs_table(accelerator, *, tiers, paths: list[str], scores, picks, step: int) -> None:
    """A few validation pairs with their images and scores, in the tracker: what the model gets right."""
    run = wandb_run(accelerator)
    if run is None:
        return
    import wandb

    from .images import open_image

    table = wandb.Table(columns=["image_a", "image_b", "tier_a", "tier_b", "score_a", "score_b", "correct"])
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
