"""What artrank's scripts share, beneath them; nothing here imports a script, model.py, data.py or artrank.py.

    errors       the one base class of the refusals a user can act on
    config       the config keys: one declaration each; run identity and the grid follow
    arguments    every script's command line, derived from those declarations; a run folder's config
    cli          one-line refusals, interruption, progress bars, the Accelerator
    files        atomic writes; values remembered per file while it is unchanged
    runs         the run folder: its lock, its record and the files it owns, the checks against it, its checkpoints
    state        what training leaves: the saved state a resume reads (no pickled code), the log, final metrics
    provenance   what each artifact was made from, checked by every reader in one place
    tables       tiers, splits, the image table's columns; cross-tier pairs; artist folds
    sources      a metadata.csv folder or a Hugging Face dataset, read as rows
    rows         the checks every row needs, and the one way bad rows are refused or skipped
    comparisons  the teachers' comparisons.csv: read, checked, split with its images, weighted per rater
    images       decoding and the one preprocessing; image checks
    resample     torch's 8-bit antialiased bicubic resize in numpy, for the ONNX path without torch
    backbones    the frozen DINO backbones: found, loaded, keyed by their weights
    features     backbone features, extracted once and cached
    losses       the pair, ordinal and comparison losses a head trains on, per batch and over a split
    ordinal      the tier model's P(tier) from a score and ordered thresholds (numpy, for the ONNX path)
    tier_head    the tier model's learnable ordered thresholds
    metrics      pairwise accuracy, intervals, correlations; the spec's gates
    tier_metrics a tier model's confusion matrix, exact and adjacent accuracy, quadratic kappa, intervals
    comparison_metrics  accuracy on held-out teachers' comparisons, per rater and within a tier; agreement
    calibration  P(A better) and tier hints, fitted on validation
    reliability_measures  ECE, Brier score and the reliability diagram of P(A better), with artist intervals
    tier_sets    tier sets with a coverage guarantee: split conformal, its threshold fitted on validation
    selection    cross-validation: grids, folds, stored cells, the summary
    tracking     wandb, online or offline, never off
    figures      evaluation figures
    card         the run's model card
    export       the ONNX export and its parity check
    scoring      an export or a checkpoint as a scorer of image files
    sharing      an export published on the model hub, and loaded back from it
    demo_data    the synthetic demo data set, its latent quality and its synthetic teachers
    out_of_fold  the review's fold heads: each work judged by a head that never saw its artist
    label_audit  how far each train and val work's tier is from what the rest of the data implies
    next_pairs   which comparisons to ask the teachers for next
    corrections  the teachers' corrections.csv: a corrected tier per image, applied wherever rows are read
    answers      the review page's answer files, crash-safe: one row appended per answer, undo of one's own last
    review_queues  what the review page shows: the pairs still to judge, the label audit, the nearest works
    review_app   the teacher's page (Gradio, local only): judge pairs, audit labels, try drawings
"""
