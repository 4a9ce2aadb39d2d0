"""What every script does around its work: one-line refusals, interruption, progress bars, the Accelerator."""

import contextlib
import errno
import functools
import logging
import signal
import sys

from .errors import ArtrankError

# The machine's state, not a bug: a folder that cannot be made or written, a full or read-only disk, a path
# naming a folder where a file is wanted (or the reverse). Any other OSError keeps its traceback.
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EISDIR,
                                errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG})


class Phase:
    """What an interruption now keeps, for the one line that Ctrl-C or SIGTERM prints."""

    def __init__(self, kept: str = "nothing was written"):
        self.kept = kept


@contextlib.contextmanager
def one_line_errors():
    """A refusal (ArtrankError), an OSError of the machine's state (ENVIRONMENT_ERRNOS), Ctrl-C or SIGTERM: one
    line on stderr, no traceback; anything else is a bug and keeps its traceback.

    Yields a Phase; the script sets phase.kept as it goes. Exit status 1 for a refusal, 130 when interrupted.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's kill is a Ctrl-C
    phase = Phase()
    try:
        yield phase
    except KeyboardInterrupt:
        close_bars()
        print(f"interrupted: {phase.kept}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except ArtrankError as err:
        close_bars()
        raise SystemExit(f"error: {err}") from None
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        close_bars()
        where = err.filename2 or err.filename  # a rename's target is the path the user named
        raise SystemExit(f"error: {where}: {err.strerror}; {phase.kept}" if where else f"error: {err}") from None


class Interruption:
    """Set when Ctrl-C or SIGTERM arrived while `deferred_interrupts` held them back."""

    def __init__(self):
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C and SIGTERM back while the block runs: they set the yielded Interruption instead, so the
    work in hand can end where it is safe to stop; the block then raises KeyboardInterrupt itself."""
    interruption = Interruption()

    def note(*_) -> None:
        interruption.requested = True

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interruption
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def close_bars() -> None:
    """Close the progress bars an exception left open: closed later, they would redraw below our line."""
    from tqdm.auto import tqdm

    for open_bar in list(tqdm._instances):
        open_bar.close()


def bar(accelerator, desc: str):
    """A tqdm bar factory shown on the local main process only."""
    from tqdm.auto import tqdm

    return functools.partial(tqdm, desc=desc, disable=not accelerator.is_local_main_process, dynamic_ncols=True)


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


def make_accelerator(cfg):
    """The Accelerator of a script: the config's mixed precision on CUDA (fp32 elsewhere), wandb as tracker."""
    from accelerate import Accelerator, PartialState

    quiet_libraries()
    cuda = PartialState().device.type == "cuda"
    return Accelerator(mixed_precision=cfg.mixed_precision if cuda else "no", log_with="wandb",
                       gradient_accumulation_steps=cfg.grad_accum_steps, project_dir=cfg.output_dir)


def cpu_fallback_note(cfg, accelerator) -> None:
    if accelerator.device.type != "cuda" and cfg.mixed_precision != "no":
        accelerator.print(f"note: no CUDA device, so {cfg.mixed_precision} mixed precision is off "
                          "and everything runs in fp32 (mixed precision applies on GPUs)")
