"""``marketarena llm ablate``: an LLM team backtested with roles removed
(evaluation/team_ablation.py).

Here beside the team tests, not in tests/cli, because the scripted OpenAI-compatible server is a
fixture of tests/agents/conftest.py. The trader's answer depends on which analysts it heard
from, so every variant holds one known symbol: its row is checked against a backtest of a
fixed-weights agent, and its tokens against the turns counted by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from marketarena.agents import llm_agent
from marketarena.agents.llm_server import free_port
from marketarena.cli import main
from marketarena.envs.data import load_dataset
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.team_ablation import ablate_team, ablation_variants

SYMBOLS = ("AAPL", "JNJ", "XOM")
START, END = "2019-01-02", "2019-01-09"  # 5 decisions
TEAM = {
    "name": "pair",
    "model": {"model": "scripted", "max_retries": 0, "timeout": 5},
    "lookback": 5,
    "roles": {
        "a1": {"prompt": "You are a1."},
        "a2": {"prompt": "You are a2."},
        "trader": {"prompt": "You are trader.", "reads": ["a1", "a2"]},
    },
    "final": "trader",
}
#: what the trader holds, by the analysts it heard from
HOLDS = {("a1", "a2"): "AAPL", ("a1",): "JNJ", ("a2",): "XOM", (): "CASH"}
TOKENS = {"a1": (100, 10), "a2": (200, 20), "trader": (300, 30)}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0


def completion(content: str, prompt_tokens: int, completion_tokens: int) -> Reply:
    message = {"role": "assistant", "content": content}
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def route(body: Mapping[str, Any]) -> Reply:
    role = re.match(r"You are (\w+)\.", body["messages"][0]["content"])[1]
    if role != "trader":
        return completion(json.dumps({"content": f"{role} reporting"}), *TOKENS[role])
    heard = tuple(
        a for a in ("a1", "a2") if f"[{a}] {a} reporting" in body["messages"][1]["content"]
    )
    answer = {"weights": {HOLDS[heard]: 1.0}, "confidence": 0.5}
    return completion(json.dumps(answer), *TOKENS["trader"])


@pytest.fixture(autouse=True)
def _environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(llm_agent, "_semaphores", {})
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def team(tmp_path):
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(TEAM, sort_keys=False))
    return path


class Fixed:
    """Holds one name (a symbol or CASH) with all its weight, every step."""

    def __init__(self, name: str) -> None:
        self.name = f"fixed:{name}"
        self.weights = np.zeros(len(SYMBOLS) + 1)
        self.weights[[*SYMBOLS, "CASH"].index(name)] = 1.0

    def reset(self, *, seed=None) -> None:
        pass

    def act(self, observation, info):
        return self.weights


def table_rows(text: str) -> list[list[str]]:
    """The cells of the printed table's body rows."""
    rows = [line.strip("│ ").split("│") for line in text.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in row] for row in rows]


def cli(*argv: str) -> tuple[int, str]:
    console = Console(record=True, width=160)
    code = main(list(argv), console=console)
    return code, console.export_text()


def test_each_variant_is_backtested_and_its_row_is_what_it_held(llm_server, team, tmp_path):
    llm_server.route = route
    options = {"base_url": llm_server.base_url, "cache_path": str(tmp_path / "c.sqlite")}
    data = load_dataset("sp500_20").select(SYMBOLS)
    rows = ablate_team(team, data, START, END, options=options)
    assert [r.variant for r in rows] == ["full team", "without a1", "without a2"]
    heard = {"full team": ("a1", "a2"), "without a1": ("a2",), "without a2": ("a1",)}
    for row in rows:
        held = HOLDS[heard[row.variant]]
        expected = run_backtest(Fixed(held), {"data": data}, START, END).metrics()
        assert row.total_return == pytest.approx(expected["total_return"], abs=1e-12), row
        assert row.sharpe == pytest.approx(expected["sharpe"], abs=1e-12)
        assert row.annual_turnover == pytest.approx(expected["annual_turnover"], abs=1e-12)
        roles = [*heard[row.variant], "trader"]
        assert row.tokens == 5 * sum(sum(TOKENS[r]) for r in roles)  # 5 decisions
        assert row.llm_cost_usd == 0.0 and row.fallbacks == 0
    # the variants share the cache: the first decision's analyst turns were asked once (later
    # ones differ: each variant's portfolio is in its prompts); the trader's inbox differs
    asked = [
        re.match(r"You are (\w+)", r.body["messages"][0]["content"])[1] for r in llm_server.requests
    ]
    assert sorted(asked) == sorted(["a1"] * 9 + ["a2"] * 9 + ["trader"] * 15)


def test_the_command_prints_the_table_and_replays_it_offline(llm_server, team, tmp_path):
    llm_server.route = route
    args = ["llm", "ablate", "--team", str(team), "--universe", ",".join(SYMBOLS)]
    args += ["--start", START, "--end", END, "--llm-cache", str(tmp_path / "c.sqlite")]
    code, text = cli(
        *args, "--base-url", llm_server.base_url, "--without", "a1", "--without", "a1,a2"
    )
    assert code == 0, text
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["full team", "without a1", "without a1, a2"]
    data = load_dataset("sp500_20").select(SYMBOLS)
    for row, held, roles in zip(
        rows,
        ["AAPL", "XOM", "CASH"],
        [("a1", "a2", "trader"), ("a2", "trader"), ("trader",)],
        strict=True,
    ):
        expected = run_backtest(Fixed(held), {"data": data}, START, END).metrics()
        tokens = 5 * sum(sum(TOKENS[r]) for r in roles)
        assert row[1] == f"{expected['total_return']:+.2%}"
        assert row[2] == f"{expected['sharpe']:.2f}"
        assert row[3] == f"{expected['annual_turnover']:.2f}"
        assert row[5:] == ["$0.0000", f"{tokens:,}", "0"]
    assert rows[0][6] == "3,300"  # (110 + 220 + 330) tokens x 5 decisions
    dead = f"http://127.0.0.1:{free_port()}/v1"
    n = len(llm_server.requests)
    replay = ["--base-url", dead, "--llm-cache-mode", "read_only"]
    again_code, again = cli(*args, *replay, "--without", "a1", "--without", "a1,a2")
    assert again_code == 0 and len(llm_server.requests) == n
    assert table_rows(again) == rows


@pytest.mark.parametrize(
    ("without", "message"),
    [
        ("trader", "the final role 'trader' cannot be removed"),
        ("ceo", "no role 'ceo' to remove (['a1', 'a2', 'trader'])"),
    ],
)
def test_a_variant_that_cannot_be_built_is_one_line_before_any_request(
    llm_server, team, without, message
):
    code, text = cli(
        "llm",
        "ablate",
        "--team",
        str(team),
        "--without",
        without,
        "--base-url",
        llm_server.base_url,
    )
    assert code == 1 and text.strip() == f"error: team pair: {message}"
    assert llm_server.requests == []


def test_a_bad_team_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TEAM, "roles": {**TEAM["roles"], "a1": {"promt": "x"}}}))
    code, text = cli("llm", "ablate", "--team", str(bad))
    assert code == 1 and text.strip() == f"error: {bad}: roles.a1.promt: unknown key"


def test_default_variants_remove_every_role_but_the_final_one(team):
    assert ablation_variants(team) == [(), ("a1",), ("a2",)]
    assert ablation_variants(team, [["a2"], ["a1", "a2"], ["a2"]]) == [(), ("a2",), ("a1", "a2")]
