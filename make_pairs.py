"""Check a data set, split it by artist and write the pair tables.

    python make_pairs.py --config configs/demo.json [--data_dir D] [--output_dir O]

Reads DATA_DIR/metadata.csv and every image (each is decoded once, so a bad file is found now,
not an hour into training). Writes into OUTPUT_DIR:
  splits.csv  image_id,file_name,tier,artist,split (80/10/10, stratified by tier, grouped by artist)
  pairs/      a Hugging Face dataset: image_a, image_b, label (1 if image_a's tier is higher, else -1), split
and prints images, artists and pairs per split and tier. train.py computes the same split itself.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from config import parse_config, print_config
from data import SPLITS, TIERS, cross_tier_pairs
from runfolder import atomic_dir, atomic_write_text
from workflow import load_table_for, make_accelerator


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
    accelerator = make_accelerator(cfg)
    table = load_table_for(cfg, accelerator)
    pairs = pair_table(table)
    out = Path(cfg.output_dir)
    atomic_write_text(out / "splits.csv", table[["image_id", "file_name", "tier", "artist", "split"]]
                      .to_csv(index=False))
    from datasets import Dataset

    with atomic_dir(out / "pairs") as tmp:
        Dataset(pairs).save_to_disk(str(tmp))
    print(summary(table, pairs))
    print(f"wrote {out / 'splits.csv'} and {out / 'pairs'} ({pairs.num_rows} pairs)")


if __name__ == "__main__":
    main()
