"""The bare-numpy reference step: the least work a batched portfolio step can do.

For ``n_envs`` portfolios over ``N`` assets it rebalances to the actions' normalised weights,
charges a proportional cost on turnover, applies the next bar's returns, computes the log
reward, auto-resets finished envs, and writes a window of returns plus the weights into a
preallocated observation buffer. No validation, no shares, no cash constraint, no recording:
it is the speed of light our environments are measured against in the same run.

``shift_windows=True`` builds each observation window from the previous one (shift by one row,
append the new row) instead of gathering it again; it is the layout trick
``PortfolioVectorEnv`` uses, offered here so that the benchmark can show what it is worth.
"""

from __future__ import annotations

import numpy as np


class ReferenceStep:
    def __init__(
        self,
        log_returns: np.ndarray,
        n_envs: int,
        *,
        window: int = 32,
        cost: float = 0.001,
        episode_length: int = 252,
        seed: int = 0,
        shift_windows: bool = False,
    ) -> None:
        t, n = log_returns.shape
        self.n_envs, self.n_assets, self.window = n_envs, n, window
        self.cost, self.episode_length = cost, episode_length
        features = np.ascontiguousarray(log_returns, dtype=np.float32)
        # row r of `windows` is the contiguous block features[r : r + window], flattened
        self.windows = np.lib.stride_tricks.as_strided(
            features, shape=(t - window + 1, window * n), strides=(features.strides[0], 4)
        )
        self.features = features
        self.growth = np.exp(log_returns).astype(np.float64)
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = window - 1, t - episode_length - 1
        self.t = self.rng.integers(self.lo, self.hi, size=n_envs)
        self.steps = np.zeros(n_envs, dtype=np.int64)
        self.weights = np.zeros((n_envs, n + 1))
        self.weights[:, -1] = 1.0
        self.nav = np.ones(n_envs)
        self.obs = np.empty((n_envs, window * n + n + 1), dtype=np.float32)
        self.wn = window * n
        self.shift_windows = shift_windows
        self._buffers = (self.obs, np.empty_like(self.obs))
        self._observe()

    def _observe(self) -> None:
        self.obs[:, : self.wn] = self.windows[self.t - self.window + 1]
        self.obs[:, self.wn :] = self.weights

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        target = np.maximum(actions, 0.0)
        target /= target.sum(axis=1, keepdims=True) + 1e-12
        turnover = np.abs(target - self.weights).sum(axis=1)
        self.t += 1
        growth = self.growth[self.t]
        value = target[:, :-1] * growth
        total = value.sum(axis=1) + target[:, -1]
        factor = total * (1.0 - self.cost * turnover)
        reward = np.log(factor)
        self.nav *= factor
        self.weights[:, :-1] = value / total[:, None]
        self.weights[:, -1] = target[:, -1] / total
        self.steps += 1
        done = self.steps >= self.episode_length
        if done.any():
            k = int(done.sum())
            self.t[done] = self.rng.integers(self.lo, self.hi, size=k)
            self.steps[done] = 0
            self.weights[done] = 0.0
            self.weights[done, -1] = 1.0
            self.nav[done] = 1.0
        if self.shift_windows:
            previous = self.obs
            self.obs = self._buffers[1] if previous is self._buffers[0] else self._buffers[0]
            n = self.n_assets
            self.obs[:, : self.wn - n] = previous[:, n : self.wn]
            self.obs[:, self.wn - n : self.wn] = np.take(self.features, self.t, axis=0)
            if done.any():
                self.obs[done, : self.wn] = self.windows[self.t[done] - self.window + 1]
            self.obs[:, self.wn :] = self.weights
        else:
            self._observe()
        return self.obs, reward, done
