"""pipeline/tracking.py: every run tracked, online or offline, said where, never blocked on the network."""

import socket
import time

import pytest
from conftest import write_config

from pipeline import tracking
from pipeline.arguments import parse_config
from pipeline.config import Config


def test_wandb_disabled_is_refused_with_the_reason(tmp_path, monkeypatch):
    for name, value in (("WANDB_MODE", "disabled"), ("WANDB_MODE", "dryrun"), ("WANDB_DISABLED", "true")):
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv(name, value)
        with pytest.raises(tracking.TrackingError, match=f"{name}={value}: every run is tracked"):
            parse_config("", ["--config", write_config(tmp_path, {})], script="train")
        monkeypatch.delenv("WANDB_DISABLED", raising=False)


def test_offline_without_credentials_and_online_when_asked_and_reachable(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "has_wandb_credentials", lambda: False)
    assert tracking.choose_mode("") == ("offline", "no wandb credentials: set WANDB_API_KEY or run `wandb login`")
    assert tracking.choose_mode("offline") == ("offline", "asked for")
    with socket.create_server(("127.0.0.1", 0)) as server:  # a local stand-in for the wandb server
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert tracking.choose_mode("online") == ("online", "asked for")
        monkeypatch.setenv("WANDB_MODE", "online")
        assert tracking.choose_mode("")[0] == "online"


def test_a_key_without_a_reachable_server_falls_back_to_offline_quickly(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    # The port is closed now: connecting is refused at once, as it is on a machine without network.
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.monotonic()
    mode, why = tracking.choose_mode("")
    assert (mode, why) == ("offline", f"127.0.0.1 did not answer within {tracking.PROBE_SECONDS:.0f} s")
    assert time.monotonic() - start < tracking.PROBE_SECONDS + 1


def test_start_tracking_says_where_the_offline_run_goes_and_how_to_upload_it(tmp_path, monkeypatch, capsys):
    registered = []
    monkeypatch.setattr(tracking.atexit, "register", lambda *args, **kwargs: registered.append(args))
    run_dir = tmp_path / "wandb" / "offline-run-20260101_000000-abc"

    class FakeAccelerator:  # the real one starts a wandb process; this checks what we say about it
        is_main_process = True

        def init_trackers(self, project, config, init_kwargs):
            self.init_kwargs = init_kwargs["wandb"]

        def get_tracker(self, name, unwrap):
            return type("Run", (), {"dir": str(run_dir / "files"), "url": None})()

        def print(self, *args):
            print(*args)

    accelerator = FakeAccelerator()
    cfg = Config(output_dir=str(tmp_path), wandb_mode="offline")
    mode = tracking.start_tracking(accelerator, cfg, job_type="train")
    assert mode == "offline" and accelerator.init_kwargs["mode"] == "offline"
    assert capsys.readouterr().out == (f"wandb: offline (asked for): run written to {run_dir}; "
                                       f"upload with: wandb sync {run_dir}\n")
    [(_, message)] = [args for args in registered if args[0] is print]  # importing wandb registers its own
    assert message == f"wandb: offline run in {run_dir}; upload it with: wandb sync {run_dir}"
