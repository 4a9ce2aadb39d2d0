"""Check a data set, split it by artist and write the pair tables.

    python make_pairs.py --config configs/demo.json [--data_dir D] [--output_dir O]

Reads DATA_DIR/metadata.csv and every image (each is decoded once, so a bad file is found now,
not an hour into training). Writes into OUTPUT_DIR:
  splits.csv  image_id,file_name,tier,artist,sha256,split (80/10/10, stratified by tier, grouped by artist)
  run.json    what the split depends on (settings, rows and their content hashes); train.py checks it
  pairs/      a Hugging Face dataset: image_a, image_b, label (1 if image_a's tier is higher, else -1), split
and prints images, artists and pairs per split and tier. train.py computes the same split itself.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from config import parse_config, print_config
from data import SPLITS, TIERS, cross_tier_pairs
from runfolder import (
    atomic_dir,
    check_fresh_start,
    check_reader,
    check_same_data,
    remove_run,
    trained_files,
    write_record,
)
from workflow import load_table_for, locked_run_folder, make_accelerator, script_errors


def pair_table(table: pd.DataFrame) -> pa.Table:
    parts = []
    for split in SPLITS:
        rows = table[table.split == split]
        a, b, label = cross_tier_pairs(rows.tier.to_numpy())
        ids = rows.image_id.to_numpy()
        parts.append(pa.table({"image_a": pa.array(ids[a], pa.string()), "image_b": pa.array(ids[b], pa.string()),
                               "label": pa.array(label, pa.int8()),
                               "split": pa.array(np.full(len(a), split), pa.string())}))
    return pa.concat_tables(parts)


def summary(table: pd.DataFrame, pairs: pa.Table) -> str:
    counts = table.pivot_table(index="split", columns="tier", values="image_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(index=list(SPLITS), columns=[t for t in TIERS if t in counts.columns], fill_value=0)
    counts = counts.rename_axis(columns=None)  # the columns are tiers, then totals
    counts["images"] = counts.sum(axis=1)
    counts["artists"] = table.groupby("split").artist.nunique().reindex(SPLITS)
    split_of_pair = pairs.column("split").to_pandas().astype(str)
    counts["pairs"] = split_of_pair.value_counts().reindex(SPLITS, fill_value=0)
    counts.loc["all"] = counts.sum()
    return counts.to_string()


def main() -> None:
    cfg, _ = parse_config(__doc__, keys=("run", "data", "overwrite_output_dir"))
    print_config(cfg)
    out, config = Path(cfg.output_dir), dataclasses.asdict(cfg)
    with script_errors(), locked_run_folder(cfg, accelerator := make_accelerator(cfg), "make_pairs.py"):
        # A trained run keeps its split: its pair tables can be rewritten, never re-split (REQ-N-001).
        trained = bool(trained_files(out)) and not cfg.overwrite_output_dir
        if trained:
            check_reader(out, config, what="make its pairs")
        else:
            check_fresh_start(out, config, overwrite=cfg.overwrite_output_dir)
        table = load_table_for(cfg, accelerator)
        if trained:
            check_same_data(out, table)
        pairs = pair_table(table)
        from datasets import Dataset

        if cfg.overwrite_output_dir and (removed := remove_run(out)):
            print(f"--overwrite_output_dir: deleted the previous run's {', '.join(removed)}")
        if not trained:
            write_record(out, config=config, table=table, stage="pairs")
        with atomic_dir(out / "pairs") as tmp:
            Dataset(pairs).save_to_disk(str(tmp))
    print(summary(table, pairs))
    print(f"wrote {out / 'splits.csv'} and {out / 'pairs'} ({pairs.num_rows} pairs)")


if __name__ == "__main__":
    main()
