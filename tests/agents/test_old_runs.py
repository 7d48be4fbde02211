"""A run stored by an older marketarena goes on as it began.

``tests/fixtures/old_runs/llm_hidden_2019.sqlite`` was written by marketarena at aad9a5e,
before prompts had price levels (they showed back-adjusted closes) and before hidden dates
counted trading sessions (they counted weekdays): an LLM run with hidden dates, 2019-06-25 to
2019-07-03. ``llm_hidden_2019.json`` holds what that version asked and the NAVs it made when it
ran the same backtest uninterrupted to 2019-07-12. Continuing the stored run with this version
must ask exactly those prompts (adjusted closes; "session 9" after the 4 July holiday, as the
weekday count gave) and end with exactly those NAVs.

That version pickled its checkpoints: this one never unpickles on reading, so the run is
continued after ``marketarena runs upgrade STORE --trust`` rewrote them in the safe format.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from marketarena.cli import main
from marketarena.envs.data import load_dataset
from marketarena.evaluation.saved_runs.persisted import load_result
from marketarena.evaluation.saved_runs.store import RunStore

FIXTURES = Path(__file__).parent.parent / "fixtures" / "old_runs"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0


def equal_weights() -> Reply:
    """What the old run's server answered every time: equal weights over the 20 symbols."""
    names = [*load_dataset("sp500_20").symbols, "CASH"]
    content = json.dumps({"weights": {n: 1.0 / len(names) for n in names}, "confidence": 0.5})
    message = {"role": "assistant", "content": content}
    return Reply(
        body={
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def test_an_old_llm_run_continues_with_the_prompts_and_navs_it_began_with(
    llm_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    expected = json.loads((FIXTURES / "llm_hidden_2019.json").read_text())
    store = tmp_path / "runs.sqlite"
    shutil.copy(FIXTURES / "llm_hidden_2019.sqlite", store)
    llm_server.script(then=equal_weights())
    console = Console(record=True, width=300)
    argv = ["backtest", "--continue", "r", "--end", "2019-07-12", "--store", str(store)]
    code = main([*argv, "--base-url", llm_server.base_url], console=console)
    assert code == 1 and not llm_server.requests
    assert (
        f"error: run r's checkpoint was written by an older marketarena as a pickle; "
        f"`marketarena runs upgrade {store} --trust` converts it (only for a store you trust: "
        "a pickle can run code)"
    ) in console.export_text()
    assert main(["runs", "upgrade", str(store), "--trust"], console=console) == 0
    assert "run r: checkpoint rewritten in the safe format" in console.export_text()
    code = main([*argv, "--base-url", llm_server.base_url], console=console)
    assert code == 0, console.export_text()
    asked = [r.body["messages"][1]["content"] for r in llm_server.requests]
    assert asked == expected["user_prompts_after_2019_07_03"]
    assert asked[1].startswith("Date: session 9\n")  # 07-05: weekdays, as the run began
    assert "AAPL 49.58" in asked[0]  # the adjusted close it showed, not rebased levels
    runs = RunStore(store)
    result = load_result(runs, "r")
    runs.close()
    assert [str(d) for d in result.dates] == expected["dates"]
    np.testing.assert_array_equal(result.nav, expected["nav"])
