"""LLM agent teams (agents/llm_team.py) against one scripted OpenAI-compatible server.

The server answers every role: ``route`` reads the role and round from the system prompt
("You are ROLE in round K.") and answers with a message naming both, so each request's inbox
can be pinned by hand. A decision of the test team: two analysts, a bull/bear debate of two
rounds, a trader, and a risk manager whose weights are traded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from marketarena.agents import llm_agent
from marketarena.agents.llm_cache import LLMCacheMiss
from marketarena.agents.llm_server import free_port
from marketarena.agents.llm_team import TeamAgent, load_team, transcript_markdown
from marketarena.agents.registry import make_agent
from marketarena.envs.data import MarketData, load_dataset
from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.evaluation.runner import BacktestResult, run_backtest

SYMBOLS = ("AAPL", "JNJ", "XOM")
DATA = load_dataset("sp500_20").select(SYMBOLS)
START, END = "2019-01-02", "2019-01-04"  # 3 marks, 2 decisions
SECRET = "sk-test-TEAM-SECRET"
FINAL = {"AAPL": 0.4, "JNJ": 0.3, "XOM": 0.1, "CASH": 0.2}
#: the turns of one decision, in order: role/round
ORDER = ["a1/1", "a2/1", "bull/1", "bear/1", "bull/2", "bear/2", "trader/1", "risk/1"]
#: (prompt, completion) tokens each role's answers report
TOKENS = {
    "a1": (101, 11),
    "a2": (102, 12),
    "bull": (103, 13),
    "bear": (104, 14),
    "trader": (105, 15),
    "risk": (106, 16),
}
TEAM: dict[str, Any] = {
    "name": "test-team",
    "model": {"model": "scripted", "max_retries": 0, "timeout": 5},
    "lookback": 5,
    "roles": {
        "a1": {"prompt": "You are {role} in round {round}. Read {symbols}."},
        "a2": {"prompt": "You are {role} in round {round}."},
        "bull": {"prompt": "You are {role} in round {round}.", "reads": ["a1", "a2"]},
        "bear": {"prompt": "You are {role} in round {round}.", "reads": ["a1", "a2"]},
        "trader": {"prompt": "You are {role} in round {round}.", "reads": ["bull", "bear"]},
        "risk": {"prompt": "You are {role} in round {round}.", "reads": ["trader"]},
    },
    "debates": [{"roles": ["bull", "bear"], "rounds": 2}],
    "final": "risk",
}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> Reply:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(200, body)


def role_of(body: Mapping[str, Any]) -> tuple[str, int]:
    match = re.match(r"You are (\w+) in round (\d+)", body["messages"][0]["content"])
    assert match, body["messages"][0]["content"]
    return match[1], int(match[2])


class Script:
    """The server's route: every role answers its message (the final role: FINAL), unless
    ``replies`` has something else for it."""

    def __init__(self, **replies: Reply) -> None:
        self.replies = replies

    def __call__(self, body: Mapping[str, Any]) -> Reply:
        role, k = role_of(body)
        if role in self.replies:
            return self.replies[role]
        tokens = TOKENS[role]
        if role == "risk":
            return completion(json.dumps({"weights": FINAL, "confidence": 0.8}), *tokens)
        doc: dict[str, Any] = {"content": f"{role} says {k}", "confidence": 0.5}
        if role == "trader":
            doc["weights"] = {"AAPL": 0.5, "JNJ": 0.5}
        return completion(json.dumps(doc), *tokens)


def failure(status: int) -> Reply:
    return Reply(status, {"error": {"message": "scripted", "type": "test", "code": status}})


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr(llm_agent, "_semaphores", {})


def write_team(tmp_path: Path, team: Mapping[str, Any] = TEAM, name: str = "team.yaml") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict(team), sort_keys=False))
    return path


def team_agent(
    tmp_path: Path, base_url: str, team: Mapping[str, Any] = TEAM, **options
) -> TeamAgent:
    settings = {"base_url": base_url, "cache_path": str(tmp_path / "cache.sqlite"), **options}
    return TeamAgent.from_file(write_team(tmp_path, team), settings)


def run(agent: TeamAgent, data: MarketData = DATA, end: str = END) -> BacktestResult:
    return run_backtest(agent, {"data": data, "window": 5}, START, end)


def turns_of(request_bodies: list[dict[str, Any]]) -> list[str]:
    return ["{}/{}".format(*role_of(b)) for b in request_bodies]


def inbox(body: Mapping[str, Any]) -> list[str]:
    """The lines of the team messages a request carried."""
    user = body["messages"][1]["content"]
    if "Messages from your team" not in user:
        return []
    return user.split("Messages from your team, oldest first:\n", 1)[1].splitlines()


# ---------------------------------------------------------------- one decision
def test_a_decision_runs_the_roles_in_order_with_their_inputs(llm_server, tmp_path):
    llm_server.route = Script()
    agent = team_agent(tmp_path, llm_server.base_url)
    result = run(agent, end="2019-01-03")  # one decision
    bodies = [r.body for r in llm_server.requests]
    assert turns_of(bodies) == ORDER
    a1 = "[a1] a1 says 1 (confidence 0.50)"
    a2 = "[a2] a2 says 1 (confidence 0.50)"
    bull1 = "[bull, round 1] bull says 1 (confidence 0.50)"
    bear1 = "[bear, round 1] bear says 1 (confidence 0.50)"
    bull2 = "[bull, round 2] bull says 2 (confidence 0.50)"
    bear2 = "[bear, round 2] bear says 2 (confidence 0.50)"
    trader = "[trader] trader says 1 (proposed weights AAPL 50.0%, JNJ 50.0%; confidence 0.50)"
    assert [inbox(b) for b in bodies] == [
        [],
        [],
        [a1, a2],
        [a1, a2, bull1],
        [a1, a2, bull1, bear1],
        [a1, a2, bull1, bear1, bull2],
        [bull1, bear1, bull2, bear2],
        [trader],
    ]
    # every role sees the same point-in-time market view, its own prompt and the answer format
    first = bodies[0]["messages"]
    assert first[0]["content"].startswith("You are a1 in round 1. Read AAPL, JNJ, XOM, CASH.")
    assert '"content" is your message to the team' in first[0]["content"]
    assert "Date: 2019-01-02" in first[1]["content"] and "2019-01-03" not in first[1]["content"]
    assert {b["messages"][1]["content"].split("\nMessages")[0] for b in bodies} == {
        first[1]["content"]
    }
    assert bodies[-1]["response_format"]["json_schema"]["strict"] is True  # the weights schema
    # the final weights are traded
    decision = agent.decisions[0]
    assert decision["outcome"] == "ok" and decision["weights"] == FINAL
    assert [f"{t['role']}/{t['round']}" for t in decision["turns"]] == ORDER
    assert result.turnover[0] > 0.7
    np.testing.assert_allclose(
        result.weights[1].sum(), 1.0
    )  # traded at the next open, marked at its close
    assert agent.confidence == 0.8


def test_tokens_and_cost_per_role_are_the_sums_of_their_turns(llm_server, tmp_path):
    llm_server.route = Script()
    team = {**TEAM, "roles": {**TEAM["roles"]}}
    team["roles"]["bull"] = {**TEAM["roles"]["bull"], "model": {"price": [2.0, 10.0]}}
    agent = team_agent(tmp_path, llm_server.base_url, team, prices={"scripted": (1.0, 4.0)})
    run(agent)  # two decisions
    d = agent.diagnostics()
    turns = {"a1": 2, "a2": 2, "bull": 4, "bear": 4, "trader": 2, "risk": 2}  # by hand
    for role, n in turns.items():
        prompt, comp = TOKENS[role]
        row = d["roles"][role]
        assert (row["turns"], row["prompt_tokens"], row["completion_tokens"]) == (
            n,
            n * prompt,
            n * comp,
        )
        price = (2.0, 10.0) if role == "bull" else (1.0, 4.0)
        assert row["cost_usd"] == pytest.approx(n * (prompt * price[0] + comp * price[1]) / 1e6)
    assert d["prompt_tokens"] == sum(n * TOKENS[r][0] for r, n in turns.items()) == 1_656
    assert d["completion_tokens"] == sum(n * TOKENS[r][1] for r, n in turns.items()) == 216
    assert d["decisions"] == 2 and d["outcomes"] == {"ok": 2} and d["fallbacks"] == 0
    assert len(d["transcripts"]) == 2 and d["cached"] == 0


# -------------------------------------------------------------------- failures
def test_a_skipped_role_is_left_out_and_its_readers_are_told(llm_server, tmp_path):
    llm_server.route = Script(a2=failure(500))
    agent = team_agent(tmp_path, llm_server.base_url)
    run(agent, end="2019-01-03")
    bodies = [r.body for r in llm_server.requests]
    assert turns_of(bodies) == ORDER  # the decision went on
    assert inbox(bodies[2]) == [
        "[a1] a1 says 1 (confidence 0.50)",
        "[a2] sent no message (server_error)",
    ]
    decision = agent.decisions[0]
    a2 = decision["turns"][1]
    assert (a2["outcome"], a2["fallback"], a2["message"]) == ("server_error", "skip", None)
    assert decision["notes"] == ["a2 failed (server_error): skipped"]
    assert decision["weights"] == FINAL
    assert agent.diagnostics()["roles"]["a2"]["failures"] == 1


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (completion("not json"), "invalid_json"),
        (completion('{"weights": {"AAPL": 1}}'), "wrong_schema"),
        (completion(""), "empty"),
        (failure(400), "api_error"),
    ],
)
def test_a_role_on_hold_ends_the_decision_holding(llm_server, tmp_path, reply, outcome):
    team = {**TEAM, "roles": {**TEAM["roles"]}}
    team["roles"]["trader"] = {**TEAM["roles"]["trader"], "on_failure": "hold"}
    llm_server.route = Script(trader=reply)
    agent = team_agent(tmp_path, llm_server.base_url, team)
    result = run(agent, end="2019-01-03")
    assert turns_of([r.body for r in llm_server.requests]) == ORDER[:-1]  # no risk turn
    decision = agent.decisions[0]
    assert decision["outcome"] == "role_failed" and decision["weights"] is None
    assert decision["notes"] == [f"trader failed ({outcome}): held"]
    assert decision["turns"][-1]["fallback"] == "hold"
    assert result.turnover[0] == 0.0 and result.fills.empty  # held the initial all-cash


def test_a_final_role_without_usable_weights_holds(llm_server, tmp_path):
    llm_server.route = Script(risk=completion('{"content": "no weights"}'))
    agent = team_agent(tmp_path, llm_server.base_url)
    result = run(agent, end="2019-01-03")
    decision = agent.decisions[0]
    assert decision["outcome"] == "wrong_schema" and decision["weights"] is None
    assert decision["turns"][-1]["fallback"] == "hold"
    assert result.fills.empty
    assert agent.diagnostics()["fallbacks"] == 1


def test_the_repair_policy_applies_to_the_final_answer(llm_server, tmp_path):
    answer = {"weights": {"AAPL": 2, "jnj": 2, "MSFT": 1}}  # renormalised, MSFT dropped
    llm_server.route = Script(risk=completion(json.dumps(answer)))
    agent = team_agent(tmp_path, llm_server.base_url)
    run(agent, end="2019-01-03")
    decision = agent.decisions[0]
    assert decision["outcome"] == "repaired"
    assert decision["weights"] == {"AAPL": 0.5, "JNJ": 0.5, "XOM": 0.0, "CASH": 0.0}
    assert decision["notes"] == [
        "dropped unknown symbol(s) ['MSFT']",
        "renormalised: weights summed to 4",
    ]


# --------------------------------------------------------------------- budgets
def test_a_role_over_its_token_budget_is_skipped(llm_server, tmp_path):
    team = {**TEAM, "roles": {**TEAM["roles"]}}
    team["roles"]["a1"] = {**TEAM["roles"]["a1"], "budget": {"tokens": 111}}  # 101 + 11: 112
    llm_server.route = Script()
    agent = team_agent(tmp_path, llm_server.base_url, team)
    run(agent, end="2019-01-03")
    a1 = agent.decisions[0]["turns"][0]
    assert (a1["outcome"], a1["fallback"]) == ("over_budget", "skip")
    assert a1["notes"] == ["112 tokens > its budget of 111"]
    assert a1["prompt_tokens"] == 101  # paid for, counted
    assert inbox(llm_server.requests[2].body)[0] == "[a1] sent no message (over_budget)"


def test_a_role_over_its_seconds_is_cut_off(llm_server, tmp_path):
    team = {**TEAM, "roles": {**TEAM["roles"]}}
    team["roles"]["a2"] = {**TEAM["roles"]["a2"], "budget": {"seconds": 0.3}}
    slow = completion('{"content": "late"}')
    slow.delay = 2.0
    llm_server.route = Script(a2=slow)
    agent = team_agent(tmp_path, llm_server.base_url, team)
    run(agent, end="2019-01-03")
    a2 = agent.decisions[0]["turns"][1]
    assert (a2["outcome"], a2["fallback"]) == ("timeout", "skip")
    assert a2["notes"] == ["no complete answer within 0.3 s"]


# ------------------------------------------------------------ cache and replay
def test_replay_from_the_cache_needs_no_server(llm_server, tmp_path):
    llm_server.route = Script(a2=failure(400))  # a cached api_error replays too
    first = team_agent(tmp_path, llm_server.base_url)
    a = run(first)
    n = len(llm_server.requests)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    replay = team_agent(tmp_path, dead, cache_mode="read_only")
    b = run(replay)
    assert len(llm_server.requests) == n
    assert json.dumps(replay.decisions) == json.dumps(first.decisions)
    np.testing.assert_array_equal(a.nav, b.nav)
    assert replay.diagnostics()["cached"] == n and replay.diagnostics()["mean_latency_s"] == 0
    other = {**TEAM, "lookback": 6}  # another prompt: not in the cache
    with pytest.raises(LLMCacheMiss):
        run(team_agent(tmp_path, dead, other, cache_mode="read_only"))


def test_perturbing_every_later_price_leaves_the_transcripts_byte_identical(
    make_llm_server, perturb_future, tmp_path
):
    last = DATA.index_of("2019-01-07")  # the last decision of the run to 2019-01-08
    future = perturb_future(DATA, last)
    assert not np.allclose(future.close[last + 1 :], DATA.close[last + 1 :])
    transcripts, requests, navs = [], [], []
    for i, data in enumerate((DATA, future)):
        server = make_llm_server()
        server.route = Script()
        agent = team_agent(tmp_path / str(i), server.base_url)
        result = run(agent, data, end="2019-01-08")
        transcripts.append(json.dumps(agent.decisions))
        requests.append(json.dumps([r.body for r in server.requests]))
        navs.append(result.nav)
        assert len(agent.decisions) == 4
    assert transcripts[0] == transcripts[1]
    assert requests[0] == requests[1]
    assert "2019-01-08" not in transcripts[0]
    np.testing.assert_array_equal(navs[0][:-1], navs[1][:-1])
    assert navs[0][-1] != navs[1][-1]  # the control: the future did move the last mark


# ----------------------------------------------------------------- YAML errors
def bad(**changes: Any) -> dict[str, Any]:
    team = json.loads(json.dumps(TEAM))
    for key, value in changes.items():
        target = team
        *path, last = key.split("__")
        for p in path:
            target = target[p]
        target[last] = value
    return team


@pytest.mark.parametrize(
    ("team", "message"),
    [
        (bad(colour="red"), "colour: unknown key"),
        (bad(roles__a1__budget={"tokenz": 3}), "roles.a1.budget.tokenz: unknown key"),
        (
            bad(roles__a1__budget={"tokens": 0}),
            "roles.a1.budget.tokens: Input should be greater than or equal to 1",
        ),
        (bad(roles__bull__reads=["a3"]), "roles.bull.reads: 'a3' is not a role"),
        (bad(final="boss"), "final: 'boss' is not a role"),
        (bad(roles__a1__reads=["risk"]), "read each other in a cycle"),
        (
            bad(debates=[{"roles": ["bull", "ox"], "rounds": 2}]),
            "debates[0].roles: 'ox' is not a role",
        ),
        (bad(roles__a1__prompt="You are {role} on {day}."), "roles.a1.prompt: unknown field 'day'"),
        (
            bad(roles__a1__prompt_file="a1.txt"),
            "roles.a1: give exactly one of prompt and prompt_file",
        ),
        (
            bad(roles__risk__on_failure="skip"),
            "roles.risk.on_failure: the final role cannot be skipped",
        ),
        (
            bad(roles__bull__reads=["a1"], roles__bear__reads=["a1"]),
            "roles ['a2']: no path to the final role",
        ),
    ],
)
def test_bad_teams_are_one_line_errors_naming_file_and_key(tmp_path, team, message):
    path = write_team(tmp_path, team)
    with pytest.raises(ConfigError) as info:
        load_team(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_files_that_are_no_team(tmp_path):
    with pytest.raises(MissingFileError, match="team file not found"):
        load_team(tmp_path / "none.yaml")
    (tmp_path / "t.yaml").write_text("roles: [a, b\n")
    with pytest.raises(ConfigError, match=r"t.yaml: not valid YAML \(line 2\)"):
        load_team(tmp_path / "t.yaml")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad(roles__a1={"prompt_file": "x.txt"})))
    with pytest.raises(ConfigError, match=r"roles.a1.prompt_file: no file .*x.txt"):
        load_team(tmp_path / "p.yaml")


def test_a_prompt_file_is_read_beside_the_yaml(llm_server, tmp_path):
    (tmp_path / "a1.txt").write_text("You are {role} in round {round}, from a file.")
    team = bad(roles__a1={"prompt_file": "a1.txt"})
    llm_server.route = Script()
    agent = team_agent(tmp_path, llm_server.base_url, team)
    run(agent, end="2019-01-03")
    assert (
        llm_server.requests[0]
        .body["messages"][0]["content"]
        .startswith("You are a1 in round 1, from a file.")
    )


def test_options_a_team_does_not_take_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"option\(s\) \['lookback'\] do not apply to a team"):
        make_agent(f"team:{write_team(tmp_path)}", llm_options={"lookback": 3})


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (Path(__file__).parents[2] / "configs" / "teams").glob("*.yaml"))
)
def test_every_example_team_loads(name):
    spec = load_team(Path(__file__).parents[2] / "configs" / "teams" / name)
    assert spec.stages()[-1] == (spec.final,)


def test_the_example_team_loads_and_runs_its_debate_in_order():
    spec = load_team(Path(__file__).parents[2] / "configs" / "teams" / "tradingagents.yaml")
    assert spec.stages() == [
        ("market_analyst",),
        ("risk_analyst",),
        ("bull", "bear"),
        ("trader",),
        ("risk_manager",),
    ]


# -------------------------------------------------------------------- ablation
def test_removing_a_role_rewires_its_readers_to_its_inputs():
    spec = load_team(Path(__file__).parents[2] / "configs" / "teams" / "tradingagents.yaml")
    no_trader = spec.without(["trader"])
    assert no_trader.roles["risk_manager"].reads == ("risk_analyst", "bull", "bear")
    neither = spec.without(["bull", "bear"])
    assert neither.roles["trader"].reads == ("market_analyst", "risk_analyst")
    assert neither.debates == ()
    assert spec.without(["bull"]).debates[0].roles == ("bear",)
    with pytest.raises(ConfigError, match="the final role 'risk_manager' cannot be removed"):
        spec.without(["risk_manager"])
    with pytest.raises(ConfigError, match="no role 'ceo' to remove"):
        spec.without(["ceo"])


def test_a_team_without_a_role_asks_the_rewired_graph(llm_server, tmp_path):
    llm_server.route = Script()
    path = write_team(tmp_path)
    options = {"base_url": llm_server.base_url, "cache_path": str(tmp_path / "c.sqlite")}
    agent = TeamAgent.from_file(path, options, without=["trader"])
    assert agent.name == f"team:{path}-trader"
    run(agent, end="2019-01-03")
    bodies = [r.body for r in llm_server.requests]
    assert turns_of(bodies) == [t for t in ORDER if not t.startswith("trader")]
    assert inbox(bodies[-1]) == [
        "[bull, round 1] bull says 1 (confidence 0.50)",
        "[bear, round 1] bear says 1 (confidence 0.50)",
        "[bull, round 2] bull says 2 (confidence 0.50)",
        "[bear, round 2] bear says 2 (confidence 0.50)",
    ]


# ------------------------------------------------------- transcripts and report
def test_the_transcript_reads_as_markdown(llm_server, tmp_path):
    llm_server.route = Script(a2=failure(500))
    agent = team_agent(tmp_path, llm_server.base_url)
    run(agent, end="2019-01-03")
    text = "\n".join(transcript_markdown(agent.decisions))
    assert text.startswith("## 2019-01-02: ok\nNotes: a2 failed (server_error): skipped")
    assert "### bull (round 2): ok, 103 + 13 tokens, $0.0000" in text
    assert "### a2 (round 1): server_error, 0 + 0 tokens, $0.0000, fallback skip" in text
    assert "Target weights: AAPL 0.4000, JNJ 0.3000, XOM 0.1000, CASH 0.2000" in text


# ----------------------------------------------------------------------- tools
def tool_reply(content: str | None, *calls: tuple[str, dict[str, Any]]) -> Reply:
    reply = completion(content or "", 50, 5)
    message = reply.body["choices"][0]["message"]
    message["content"] = content
    message["tool_calls"] = [
        {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
        for i, (n, a) in enumerate(calls)
    ]
    reply.body["choices"][0]["finish_reason"] = "tool_calls"
    return reply


class ToolScript(Script):
    """a1 uses tools: it asks for prices (one request past the decision), then proposes."""

    def __call__(self, body: Mapping[str, Any]) -> Reply:
        role, _ = role_of(body)
        if role != "a1":
            return super().__call__(body)
        date = re.search(r"Date: (\S+)", body["messages"][1]["content"])[1]
        results = [m for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return tool_reply(
                None,
                ("get_prices", {"symbols": ["AAPL"], "last": 3}),
                ("get_prices", {"symbols": ["AAPL"], "end": "2030-01-01"}),
            )
        closes = json.loads(results[0]["content"])["close"]["AAPL"]
        proposal = {"weights": {"AAPL": 0.6, "CASH": 0.4}, "confidence": 0.9}
        return tool_reply(
            f"AAPL closed at {closes[-1]:.2f} on {date}", ("set_target_weights", proposal)
        )


TOOL_TEAM = {
    **TEAM,
    "roles": {
        **TEAM["roles"],
        "a1": {**TEAM["roles"]["a1"], "tools": ["get_prices"], "budget": {"tool_calls": 4}},
    },
}


def test_a_role_with_tools_runs_the_tool_loop_and_posts_its_message(llm_server, tmp_path):
    llm_server.route = ToolScript()
    agent = team_agent(tmp_path, llm_server.base_url, TOOL_TEAM)
    run(agent, end="2019-01-03")
    bodies = [r.body for r in llm_server.requests]
    assert turns_of(bodies) == ["a1/1", *ORDER]  # a1 took two turns
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == [
        "get_prices",
        "set_target_weights",
    ]
    a1 = agent.decisions[0]["turns"][0]
    assert a1["outcome"] == "ok" and a1["prompt_tokens"] == 100 and a1["completion_tokens"] == 10
    calls = a1["tool_calls"]
    assert [c["name"] for c in calls] == ["get_prices", "get_prices", "set_target_weights"]
    assert calls[0]["result"]["dates"][-1] == "2019-01-02"
    assert calls[1]["result"]["look_ahead"] is True  # refused, read by the model
    close = float(DATA.close[DATA.index_of("2019-01-02"), 0])
    content = f"AAPL closed at {close:.2f} on 2019-01-02"
    assert a1["message"] == {
        "role": "a1",
        "round": 1,
        "content": content,
        "weights": {"AAPL": 0.6, "CASH": 0.4},
        "confidence": 0.9,
    }
    assert (
        inbox(bodies[3])[0]
        == f"[a1] {content} (proposed weights AAPL 60.0%, CASH 40.0%; confidence 0.90)"
    )


def test_a_tool_role_out_of_tool_calls_is_skipped(llm_server, tmp_path):
    looping = tool_reply(None, ("get_prices", {"last": 2}))
    llm_server.route = Script(a1=looping)
    agent = team_agent(tmp_path, llm_server.base_url, TOOL_TEAM)
    run(agent, end="2019-01-03")
    a1 = agent.decisions[0]["turns"][0]
    assert (a1["outcome"], a1["fallback"]) == ("tool_budget", "skip")
    assert a1["notes"] == ["tool-call budget spent (4 calls) without set_target_weights"]
    assert agent.decisions[0]["notes"] == ["a1 failed (tool_budget): skipped"]
    # four calls ran (the budget); the forced last turn called get_prices again: refused
    assert len(a1["tool_calls"]) == 5 and "dates" in a1["tool_calls"][3]["result"]
    assert a1["tool_calls"][4]["result"]["error"].startswith("the budget of 4 tool calls is spent")
    assert agent.decisions[0]["weights"] == FINAL


def test_tool_results_know_nothing_after_the_decision(make_llm_server, perturb_future, tmp_path):
    last = DATA.index_of("2019-01-07")
    future = perturb_future(DATA, last)
    transcripts = []
    for i, data in enumerate((DATA, future)):
        server = make_llm_server()
        server.route = ToolScript()
        agent = team_agent(tmp_path / str(i), server.base_url, TOOL_TEAM)
        run(agent, data, end="2019-01-08")
        transcripts.append(json.dumps(agent.decisions))
    assert transcripts[0] == transcripts[1]
    assert "look_ahead" in transcripts[0]


# ------------------------------------------------------------ saved runs, report
def test_the_transcript_is_saved_with_the_run_and_shown_in_the_report(llm_server, tmp_path):
    from marketarena.evaluation.saved_runs.persisted import (
        continue_backtest,
        load_result,
        run_report,
        start_backtest,
    )
    from marketarena.evaluation.saved_runs.store import RunStore

    llm_server.route = Script(a2=failure(500))
    path = write_team(tmp_path)
    llm = {"base_url": llm_server.base_url, "cache_path": str(tmp_path / "c.sqlite")}
    store = RunStore(tmp_path / "runs.sqlite")
    run_args = {"universe": SYMBOLS, "llm": llm, "window": 5}
    start_backtest(store, "whole", f"team:{path}", "sp500_20", START, "2019-01-08", **run_args)
    start_backtest(store, "parts", f"team:{path}", "sp500_20", START, END, **run_args)
    continue_backtest(store, "parts", "2019-01-08")  # resumed from the saved agent state
    whole, parts = load_result(store, "whole"), load_result(store, "parts")
    saved = whole.diagnostics["transcripts"]
    assert [d["date"] for d in saved] == ["2019-01-02", "2019-01-03", "2019-01-04", "2019-01-07"]
    assert json.dumps(parts.diagnostics["transcripts"]) == json.dumps(saved)
    np.testing.assert_array_equal(parts.nav, whole.nav)
    assert saved[0]["turns"][1]["fallback"] == "skip"
    report = run_report(whole)
    notes = report.notes()
    assert "whole / bull: 8 turns, 0 failed; 824 prompt + 104 completion tokens" in "\n".join(notes)
    assert "whole / a2: 4 turns, 4 failed; 0 prompt + 0 completion tokens" in "\n".join(notes)
    page = report.html()
    assert "<h2>Transcripts: whole</h2>" in page
    assert page.count("<details><summary>") == 4 and "2019-01-07: ok" in page
    assert "[bull, round 1] bull says 1 (confidence 0.50)" in page
    files = report.write(tmp_path / "report")
    markdown = files["transcripts:whole"].read_text()
    assert markdown.startswith("# Transcripts: whole\n\n## 2019-01-02: ok")
    changed = {**TEAM, "roles": {**TEAM["roles"], "a2": {"prompt": "You are {role}, now."}}}
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    with pytest.raises(ConfigError, match="the team's YAML changed since its run was saved"):
        continue_backtest(store, "whole", "2019-01-09")
    metrics = json.loads(files["json"].read_text())["agents"][0]
    assert metrics["diag_roles_bull_prompt_tokens"] == 824
    # the API key is in no request, transcript, saved run or report file
    assert SECRET not in json.dumps([r.body for r in llm_server.requests])
    assert all(SECRET.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_each_decision_is_one_mlflow_trace_with_a_span_per_turn(llm_server, tmp_path, monkeypatch):
    import mlflow

    from marketarena.agents import llm_tracing

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(llm_tracing.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    try:
        llm_server.route = Script(a2=failure(400))  # cached, unlike transient failures
        experiment = mlflow.MlflowClient().create_experiment("team-traces")
        agent = team_agent(tmp_path, llm_server.base_url)
        with llm_tracing.llm_tracing(experiment) as ids:
            run(agent)
        assert len(ids) == 2
        found = mlflow.search_traces(locations=[experiment], return_type="list")
        found.sort(key=lambda t: t.info.tags["marketarena.date"])
        for trace, decision in zip(found, agent.decisions, strict=True):
            assert trace.info.tags["marketarena.date"] == decision["date"]
            root, *spans = sorted(
                trace.data.spans, key=lambda s: (s.parent_id is not None, s.start_time_ns)
            )
            assert root.name == agent.name and root.span_type == "AGENT"
            assert root.outputs == {"weights": FINAL}
            assert root.attributes["prompt_tokens"] == sum(
                t["prompt_tokens"] for t in decision["turns"]
            )
            names = ["a1", "a2", "bull", "bear", "bull round 2", "bear round 2", "trader", "risk"]
            assert [s.name for s in spans] == names
            assert all(s.parent_id == root.span_id for s in spans)
            assert spans[0].inputs["messages"] == decision["turns"][0]["request"]
            assert spans[1].status.status_code == "ERROR"
            assert spans[2].attributes["prompt_tokens"] == 103
        # a replay from the cache makes no request: no trace
        again = team_agent(tmp_path, llm_server.base_url)
        with llm_tracing.llm_tracing(experiment) as ids:
            run(again)
        assert (
            ids == [] and len(mlflow.search_traces(locations=[experiment], return_type="list")) == 2
        )
    finally:
        mlflow.set_tracking_uri(None)
