"""Check a data set, split it by artist and write the pair tables.

    python make_pairs.py --config configs/demo.json [--data_dir D] [--output_dir O]

Reads DATA_DIR (a metadata.csv folder or a dataset) and every image (each is decoded once, so a bad file
is found now, not an hour into training). Writes into OUTPUT_DIR:
  splits.csv    image_id,file_name,tier,artist,sha256,split (80/10/10, stratified by tier, grouped by artist)
  image_table/  the same rows as a Hugging Face dataset (tier and split as class labels)
  run.json      what the split depends on (settings, rows and their content hashes); train.py checks it
  pairs/        a Hugging Face dataset: image_a, image_b, label (1 if image_a's tier is higher, else -1), split
  comparisons/  the teachers' comparisons of DATA_DIR/comparisons.csv when there is one: image_a, image_b
                (image_ids), winner (a, b or tie), rater, split (of both images, or "crossing": used by no split)
and prints images, artists and pairs per split and tier, and the comparisons per split. train.py computes the
same split itself.
"""

import dataclasses
from pathlib import Path

from pipeline import cli
from pipeline.arguments import parse_config
from pipeline.config import MAKE_PAIRS, print_config
from pipeline.files import atomic_dir
from pipeline.runs import (
    check_fresh_start,
    check_reader,
    check_same_data,
    locked_run_folder,
    remove_run,
    trained_files,
    write_record,
)
from pipeline.tables import SPLITS, TIERS, frame


def summary(table, pairs) -> str:
    """Images per split and tier, artists and pairs per split, and the totals."""
    rows = frame(table)
    counts = rows.pivot_table(index="split", columns="tier", values="image_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(index=list(SPLITS), columns=[t for t in TIERS if t in counts.columns], fill_value=0)
    counts = counts.rename_axis(columns=None)  # the columns are tiers, then totals
    counts["images"] = counts.sum(axis=1)
    counts["artists"] = rows.groupby("split").artist.nunique().reindex(SPLITS)
    counts["pairs"] = frame(pairs)["split"].value_counts().reindex(SPLITS, fill_value=0)
    counts.loc["all"] = counts.sum()
    return counts.to_string()


def main(argv: list[str] | None = None) -> None:
    with cli.one_line_errors():
        cfg, _ = parse_config(__doc__, argv, script=MAKE_PAIRS)
        if cfg.verbose:  # train.py prints it, once per run
            print_config(cfg)
        from data import comparisons_dataset, comparisons_digest, load_comparisons, load_images, pair_table

        out, config = Path(cfg.output_dir), dataclasses.asdict(cfg)
        accelerator = cli.make_accelerator(cfg)
        with locked_run_folder(out, accelerator, "make_pairs.py"):
            # A trained run keeps its split: its pair tables can be rewritten, never re-split.
            trained = bool(trained_files(out)) and not cfg.overwrite_output_dir
            if trained:
                check_reader(out, config, what="make its pairs")
            else:
                check_fresh_start(out, config, overwrite=cfg.overwrite_output_dir)
            table = load_images(cfg, accelerator)
            comparisons = load_comparisons(cfg, accelerator, table)
            if trained:
                check_same_data(out, table, comparisons_sha256=comparisons_digest(cfg.data_dir))
            pairs = pair_table(table)
            if cfg.overwrite_output_dir and (removed := remove_run(out)):
                print(f"--overwrite_output_dir: deleted the previous run's {', '.join(removed)}")
            if not trained:
                write_record(out, config=config, table=table, stage="pairs",
                             comparisons_sha256=comparisons_digest(cfg.data_dir))
            with atomic_dir(out / "pairs") as tmp:
                pairs.save_to_disk(str(tmp))
            if len(comparisons):
                with atomic_dir(out / "comparisons") as tmp:
                    comparisons_dataset(comparisons, table, cfg.data_dir).save_to_disk(str(tmp))
    print(summary(table, pairs))
    if len(comparisons):
        from pipeline.comparisons import split_counts

        rows = frame(table)
        print("teachers' comparisons (a crossing one joins images of two splits and is used by none):")
        print(split_counts(comparisons, dict(zip(rows["image_id"], rows["tier"]))).to_string())
    print(f"wrote {out / 'splits.csv'} and {out / 'pairs'} ({pairs.num_rows} pairs)")


if __name__ == "__main__":
    main()
