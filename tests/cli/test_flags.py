"""Flag names that mean the same thing are spelled the same across commands."""

from __future__ import annotations


def test_parallelism_is_spelled_the_same_in_evaluate_and_tune():
    """--jobs and --n-jobs both work in both commands (tune took --n-jobs, evaluate --jobs)."""
    from marketarena.cli.app import build_parser

    parser = build_parser()
    for flag in ("--jobs", "--n-jobs"):
        assert parser.parse_args(["evaluate", "--agent", "random", flag, "3"]).jobs == 3
        assert parser.parse_args(["tune", "--config", "c.yaml", flag, "2"]).n_jobs == 2


def test_the_llm_answer_form_reaches_the_agents_settings():
    from marketarena.cli.app import build_parser
    from marketarena.cli.common import llm_options

    parser = build_parser()
    for command in (["evaluate", "--agent", "llm:local"], ["demo"]):
        args = parser.parse_args([*command, "--llm-answer", "picks"])
        assert args.llm_answer == "picks"
    args = parser.parse_args(["evaluate", "--agent", "llm:local", "--llm-answer", "picks"])
    assert llm_options(args)["answer"] == "picks"
    assert "answer" not in llm_options(parser.parse_args(["evaluate", "--agent", "llm:local"]))
