"""Export the trained ranker as one ONNX graph, preprocessed pixels -> score (and its spread and novelty), and check it.

    python export_onnx.py --config configs/demo.json [--fp16] [--parity_images 4] [--bench_seconds 10]
    python export_onnx.py RUN --fp16 --push_to_hub OWNER/NAME [--license mit]

Reads the best checkpoint (OUTPUT_DIR/checkpoints/best, or --checkpoint), the backbone, the run's data (a
few validation images for the parity check; the data must still be the run's) and OUTPUT_DIR/calibration.json.
Writes OUTPUT_DIR/model.onnx (fp32), with --fp16 also model_fp16.onnx (for GPUs), and model.json: the
preprocessing, the score head, the checkpoint and the calibration, so that a consumer holding only the ONNX
file and model.json feeds it correctly. The graph also holds the top-k checkpoints' heads (output score_sd, the
score's spread) and the training features (output novelty, for the unfamiliar-image flag) when the run has them.

Each file is checked by onnx.checker and against PyTorch on the parity images at batch 1 and batch N, within
a tolerance that keeps the order of every pair more than two tolerances apart (pipeline/export.py states it).
On failure nothing is written and the exit status is 1.
"""

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline import cli
from pipeline.arguments import parse_config
from pipeline.calibration import read_calibration
from pipeline.config import EXPORT, print_config
from pipeline.errors import ArtrankError
from pipeline.images import input_size, load_pixels
from pipeline.runs import check_reader, check_same_data, locked_run_folder, top_members
from pipeline.scoring import FILE_NAMES
from pipeline.tables import frame

if TYPE_CHECKING:
    import torch


def add_arguments(parser) -> None:
    parser.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx, for GPUs")
    parser.add_argument("--parity_images", type=int, default=4, help="validation images for the parity check")
    parser.add_argument("--latency_batch", type=int, default=32, help="batch size of the throughput figure")
    parser.add_argument("--bench_seconds", type=float, default=10.0, help="time for the latency figures; 0: none")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="then upload model.onnx, model.json and the model "
                                                                  "card to this hub repository (created if missing)")
    parser.add_argument("--license", default="other", help="the license the uploaded model card states")


def parity_images(table, count: int, *, image_size: int, patch_size: int) -> tuple[list[str], "torch.Tensor"]:
    """`count` validation images of the run, spread over the tiers, preprocessed the one way."""
    import torch

    from data import split_rows

    rows = frame(split_rows(table, "val")).sort_values(["tier", "image_id"])
    rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))]
    pixels = []
    for path in rows.path:
        try:
            pixels.append(load_pixels(path, image_size, patch_size))
        except Exception as err:  # Pillow raises many types for a file changed since the checks
            raise ArtrankError(f"parity image {path}: {type(err).__name__}: {err}") from None
    return list(rows.path), torch.stack(pixels)


def main(argv: list[str] | None = None) -> None:
    with cli.one_line_errors() as phase:
        cfg, args = parse_config(__doc__, argv, script=EXPORT, add_arguments=add_arguments)
        if cfg.verbose:  # train.py prints it, once per run
            print_config(cfg)
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # a warning per optional torchvision op it lacks
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # torch.export's own
        from data import load_images
        from model import load_ranker
        from pipeline.export import export_run
        from pipeline.sharing import check_hub, push_export

        if args.push_to_hub:
            check_hub(args.push_to_hub)  # now, not after the export: an unreachable hub is known in a second

        accelerator = cli.make_accelerator(cfg)
        with locked_run_folder(cfg.output_dir, accelerator, "export_onnx.py"):
            check_reader(cfg.output_dir, dataclasses.asdict(cfg), what="export it")  # before the backbone: cheap
            phase.kept = "the previous export, if any, as it was"
            table = load_images(cfg, accelerator)
            check_same_data(cfg.output_dir, table, comparisons_sha256=None)  # an export reads no comparisons
            ranker, meta, checkpoint = load_ranker(cfg, accelerator, readout=True)
            paths, pixels = parity_images(table, max(2, args.parity_images), image_size=cfg.image_size,
                                          patch_size=meta["patch_size"])
            print(f"parity images: {', '.join(paths)}")
            out = Path(cfg.output_dir)
            calibration = read_calibration(out, checkpoint=checkpoint)
            description = export_run(ranker, meta=meta, checkpoint=checkpoint, members=top_members(out),
                                     calibration=calibration,
                                     out=out, side=input_size(cfg.image_size, meta["patch_size"]), pixels=pixels,
                                     device=accelerator.device, fp16=args.fp16, bench_seconds=args.bench_seconds,
                                     latency_batch=args.latency_batch)
    written = [str(out / FILE_NAMES[p]) for p in description["files"]]
    print(f"wrote {', '.join(written)} and {out / 'model.json'}"
          + ("" if description["calibration"] else f" (no calibration.json fitted on {checkpoint}: predictions get "
                                                    "no tier hint and no P(A better))"))
    if args.push_to_hub:
        with cli.one_line_errors():
            print(f"uploaded to {push_export(out, args.push_to_hub, license=args.license)}")


if __name__ == "__main__":
    main()
