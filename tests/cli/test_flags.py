"""Flag names that mean the same thing are spelled the same across commands."""

from __future__ import annotations


def test_parallelism_is_spelled_the_same_in_evaluate_and_tune():
    """--jobs and --n-jobs both work in both commands (tune took --n-jobs, evaluate --jobs)."""
    from marketarena.cli.app import build_parser

    parser = build_parser()
    for flag in ("--jobs", "--n-jobs"):
        assert parser.parse_args(["evaluate", "--agent", "random", flag, "3"]).jobs == 3
        assert parser.parse_args(["tune", "--config", "c.yaml", flag, "2"]).n_jobs == 2
