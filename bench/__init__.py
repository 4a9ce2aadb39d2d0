"""Benchmarks: `python -m bench.<name> --help` from the repository root. Results in bench/RESULTS.md."""
