"""Request estimates of tool and team agents: upper bounds, counted by hand, and the ``--yes``
guard refusing a tool run past 1,000 requests that an ``llm:`` run of the same days passes."""

from __future__ import annotations

import textwrap

import pytest
from rich.console import Console

from marketarena.agents.llm_server import free_port
from marketarena.cli import main
from marketarena.evaluation.evaluate import EvaluationConfig, llm_request_estimates

TEAM = """\
name: bounded
model: {model: m}
decide_every: 5
roles:
  analyst: {prompt: "Look.", tools: [get_prices], budget: {tool_calls: 2}}
  bull: {prompt: "Argue up.", reads: [analyst]}
  bear: {prompt: "Argue down.", reads: [analyst]}
  trader: {prompt: "Decide.", reads: [bull, bear]}
debates:
  - {roles: [bull, bear], rounds: 2}
final: trader
"""


def test_tool_and_team_estimates_are_upper_bounds_counted_by_hand(tmp_path):
    team = tmp_path / "team.yaml"
    team.write_text(textwrap.dedent(TEAM))
    config = EvaluationConfig(
        agents=("equal_weight", "llm:m", "llm-tools:m", f"team:{team}"),
        data="sp500_20",
        start="2019-01-02",
        end="2019-12-31",
        llm={"decide_every": 21, "max_tool_calls": 3, "prices": {"m": (1.0, 4.0)}},
    )
    one, tools, crew = llm_request_estimates(config)
    sessions = 251  # 252 trading dates in 2019: 251 decisions
    assert (one.requests, one.upper_bound) == (12, False)  # ceil(251 / 21)
    # at most 3 tool calls and the forced last turn: 4 requests a decision
    assert (tools.requests, tools.upper_bound) == (12 * 4, True)
    assert tools.prompt_tokens == 48 * (180 + 30 * 20)
    assert tools.completion_tokens == 48 * 12 * 20
    assert tools.cost_usd == pytest.approx((37_440 * 1.0 + 11_520 * 4.0) / 1e6)
    # the team decides every 5 sessions (its YAML): analyst 2 + 1, bull and bear 2 rounds
    # each, the trader 1 -> 8 requests a decision
    assert crew.requests == -(-sessions // 5) * 8 == 51 * 8
    assert crew.upper_bound and crew.cost_usd is None
    assert tools.line().startswith("llm-tools:m: up to 48 LLM requests, ~37,440 prompt")
    assert one.line().startswith("llm:m: 12 LLM requests")


def test_a_tool_run_past_1000_requests_is_refused_without_yes(tmp_path):
    """2019 daily: 251 requests for llm: (allowed), up to 251 * 13 for llm-tools (refused)."""
    dead = f"http://127.0.0.1:{free_port()}/v1"  # any request would fail: none is made
    console = Console(record=True, width=400)
    argv = ["evaluate", "--agent", "llm-tools:gpt-x", "--start", "2019-01-02"]
    argv += ["--end", "2019-12-31", "--base-url", dead, "--output", str(tmp_path / "out")]
    code = main(argv, console=console)
    text = console.export_text()
    assert code == 1 and "Traceback" not in text
    (line,) = [line for line in text.splitlines() if line.startswith("error:")]
    assert line == (
        "error: llm-tools:gpt-x would make up to 3,263 requests (more than 1,000): pass --yes "
        "to run it, or narrow --start/--end or raise --llm-decide-every"
    )
    assert "llm-tools:gpt-x: up to 3,263 LLM requests" in text


def test_the_arena_counts_a_tool_agent_s_bound_per_match():
    """Pairs of 3 agents: each plays 2 matches, so twice the evaluation's 12 * 4 requests."""
    from marketarena.evaluation.arena import Tournament
    from marketarena.evaluation.arena import llm_request_estimates as arena_estimates

    tournament = Tournament(
        agents=("equal_weight", "llm:m", "llm-tools:m"),
        periods=(("2019-01-02", "2019-12-31"),),
        llm={"decide_every": 21, "max_tool_calls": 3},
    )
    one, tools = arena_estimates(tournament)
    assert (one.requests, one.upper_bound) == (2 * 12, False)
    assert (tools.requests, tools.upper_bound) == (2 * 12 * 4, True)
    assert tools.line().startswith("llm-tools:m: up to 96 LLM requests")
