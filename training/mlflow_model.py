"""The trained model as an MLflow pyfunc model, so MLflow can load and serve it.

Logged as "models from code" (this file), with the model folder (``model.zip``,
``vecnormalize.pkl``, ``agent.json``) as an artifact. ``predict`` maps observations
``(n, D)`` (rows of floats) to target weights ``(n, N + 1)`` (assets, then cash); the rows are
the steps of one episode, from its start (a recurrent policy carries its state across them,
from zero at the first row of every call).
``marketarena evaluate --agent runs:/<run_id>/model`` (or ``models:/<name>/<version>``)
downloads the same folder and loads it as an agent.
"""

from __future__ import annotations

import mlflow.models
import numpy as np
from mlflow.pyfunc import PythonModel


# PythonModel imported by name: `mlflow.pyfunc` is also a lazy attribute of `mlflow`, which
# type checkers see instead of the module
class SB3PortfolioModel(PythonModel):
    def load_context(self, context):
        from marketarena.agents.sb3_agent import SB3Agent

        self.agent = SB3Agent.from_file(context.artifacts["model_dir"])

    def predict(self, context, model_input: list[list[float]], params=None) -> list[list[float]]:
        obs = np.asarray(model_input, dtype=np.float32)
        if obs.ndim == 1:
            obs = obs[None, :]
        self.agent.reset()
        return [self.agent.act(row, {}).tolist() for row in obs]


mlflow.models.set_model(SB3PortfolioModel())
