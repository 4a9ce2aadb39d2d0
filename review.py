"""The teacher's loop on a trained run: which labels to doubt, which comparisons to ask for next.

    python review.py audit --output_dir RUN           # RUN/review/label_audit.csv and label_audit.png
    python review.py pairs --output_dir RUN --n 200   # RUN/review/next_pairs.csv
    python review.py app --output_dir RUN [--port P]  # the teachers' page on http://127.0.0.1:P

Both train fold heads on the run's train and val works (cached features; the test split is never read): the
works are cut into --review_folds folds of whole artists, and each fold's head, trained by train.py's own
procedure with the run's own head and training settings on the other folds but one, never sees that fold's
artists (docs/review.md has the rules and what the figures do not mean). The page judges the queued pairs and
corrects tiers into the run's data folder (docs/review-app.md). A command: `python review.py COMMAND --help`.
"""

import sys
from pathlib import Path

from pipeline import cli
from pipeline.arguments import parse_config
from pipeline.config import REVIEW
from pipeline.files import atomic_write_text
from pipeline.runs import REVIEW_DIR, check_reader, locked_run_folder

AUDIT = """Label audit: every train and val work's tier weighed against the teachers' judgements of it and its
score by the fold head that never saw its artist.

    python review.py audit --output_dir RUN

Writes RUN/review/label_audit.csv (rank, file_name, image_id, artist, split, tier, oof_score, hint, p_S, p_A,
p_B, p_C, doubt, judged, fold; rank 1 the most doubtful) and RUN/review/label_audit.png (the most doubtful
works with their given tier and the hint). A doubtful label is not a wrong one: docs/review.md.
"""
PAIRS = """Which pairs to ask the teachers next: those whose answer would tell the fold heads apart most.

    python review.py pairs --output_dir RUN --n 200

Writes RUN/review/next_pairs.csv (image_a, image_b, tier_a, tier_b, split, p_a_better, spread, reason, ...):
pairs of one split (train or val), of one tier or adjacent tiers, never already in comparisons.csv, spread
over the works and artists. The rule: docs/review.md.
"""
APP = """The review page, on this machine only: judge the queued pairs, page through the label audit, try drawings.

    python review.py app --output_dir RUN [--port 7860] [--rater NAME]

Each answer is appended at once to the run's data folder: comparisons.csv (judgements) and corrections.csv
(corrected tiers; metadata.csv is never edited). Scores come from the run's export when it has one, else from
its checkpoint. Ctrl-C stops it. docs/review-app.md.
"""
SHEET = 24  # works on the contact sheet


def review_heads(cfg, accelerator):
    """The run's train+val works (a DataFrame), their fold heads, and the train+val comparisons."""
    import torch

    from data import train_val_features
    from model import fold_heads
    from pipeline.tables import frame

    check_reader(cfg.output_dir, vars(cfg), what="review it")
    rows, _, features, _, comparisons = train_val_features(cfg, [cfg.feature], accelerator, run_dir=cfg.output_dir)
    torch.set_num_threads(1)  # a head's small matrices gain nothing from more threads (as crossval.py)
    rows = frame(rows)
    return rows, fold_heads(cfg, features[cfg.feature], rows, comparisons, folds=cfg.review_folds), comparisons


def audit(argv: list[str]) -> None:
    with cli.one_line_errors():
        cfg, _ = parse_config(AUDIT, argv, script=REVIEW)
        accelerator = cli.make_accelerator(cfg)
        with locked_run_folder(cfg.output_dir, accelerator, "review.py audit"):
            from pipeline.figures import doubt_sheet
            from pipeline.label_audit import AUDIT_SHEET, LABEL_AUDIT, audit_summary, audit_table

            rows, heads, comparisons = review_heads(cfg, accelerator)
            table = audit_table(rows, heads, comparisons)
            out = Path(cfg.output_dir) / REVIEW_DIR
            top = table.head(SHEET).merge(rows[["image_id", "path"]], on="image_id", how="left")
            atomic_write_text(out / LABEL_AUDIT, table.to_csv(index=False))
            doubt_sheet(list(top["path"]), list(top["tier"]), list(top["hint"]), list(top["doubt"]),
                        out / AUDIT_SHEET, title=f"The {len(top)} most doubtful of {len(table)} train+val "
                        "labels: rank, given tier -> out-of-fold hint, doubt (a doubtful label is not a wrong one)")
            print("\n".join(audit_summary(table)))
            print(f"wrote {out / LABEL_AUDIT} and {out / AUDIT_SHEET}")


def positive(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of pairs >= 1 expected, got {text!r}")
    return int(text)


def pairs(argv: list[str]) -> None:
    with cli.one_line_errors():
        cfg, args = parse_config(PAIRS, argv, script=REVIEW, add_arguments=lambda parser: parser.add_argument(
            "--n", type=positive, default=200, help="pairs to propose (default: %(default)s)"))
        accelerator = cli.make_accelerator(cfg)
        with locked_run_folder(cfg.output_dir, accelerator, "review.py pairs"):
            from pipeline.errors import ArtrankError
            from pipeline.next_pairs import NEXT_PAIRS, choose_pairs

            rows, heads, comparisons = review_heads(cfg, accelerator)
            chosen = choose_pairs(rows, heads, comparisons, args.n)
            if chosen.empty:
                raise ArtrankError(f"{cfg.output_dir}: no pair left to ask for (every train or val pair of one or "
                                   "adjacent tiers is in comparisons.csv)")
            out = Path(cfg.output_dir) / REVIEW_DIR / NEXT_PAIRS
            atomic_write_text(out, chosen.to_csv(index=False))
            short = f" (only {len(chosen)} fit the caps per image and artist)" if len(chosen) < args.n else ""
            print(f"{len(chosen)} pairs{short}, most valuable first:")
            print("\n".join(f"  {r.image_a} vs {r.image_b}: {r.reason}" for r in chosen.head(10).itertuples()))
            print(f"wrote {out}")


def app(argv: list[str]) -> None:
    with cli.one_line_errors():
        from pipeline.review_app import add_arguments, serve

        cfg, args = parse_config(APP, argv, script=REVIEW, add_arguments=add_arguments)
        check_reader(cfg.output_dir, vars(cfg), what="serve its page")

        def load_ranker():
            import artrank

            return artrank.load(cfg.output_dir)

        serve(cfg.output_dir, cfg.data_dir, port=cfg.port, rater=args.rater, load_ranker=load_ranker)


COMMANDS = {"audit": audit, "pairs": pairs, "app": app}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: review.py {{{','.join(COMMANDS)}}} ...\n\n{__doc__}")
        raise SystemExit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        raise SystemExit(f"review.py: error: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)} (see --help)")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
