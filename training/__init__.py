"""Training: YAML configs, SB3 training on the vector env, checkpoints, MLflow tracking."""

from marketarena.training.config import Config, ConfigError, build_config, load_config
from marketarena.training.train import TrainResult, train

__all__ = ["Config", "ConfigError", "TrainResult", "build_config", "load_config", "train"]
