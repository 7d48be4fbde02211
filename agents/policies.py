"""Policies for portfolio observations: one network applied to every asset (EIIE-style).

:class:`AssetwisePolicy` is an SB3 actor-critic policy for :class:`PortfolioEnv`'s flat
observation ``[features (window, N, F), weights (N,), cash (1,)]``. A shared encoder reads
each asset's feature window and current weight; the per-asset codes are averaged into a
market context; one head scores each asset from its code and the context, another scores cash
from the context. The action is ``(N + 1,)`` scores (assets, then cash) for the ``softmax``
mapping. Reordering the assets reorders the scores the same way (permutation equivariance),
the value is unchanged (invariance), and the parameter count does not depend on ``N``, so
one network serves any universe size. After Jiang, Xu & Liang (2017), "A Deep Reinforcement
Learning Framework for the Financial Portfolio Management Problem" (EIIE).

Use it by name in a config (``algo.policy: AssetwisePolicy``) or directly::

    PPO(AssetwisePolicy, venv, policy_kwargs={"n_features": 1})
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn


def _mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class AssetwiseExtractor(nn.Module):
    """Shared per-asset encoder, mean-pooled context, per-asset and cash score heads."""

    def __init__(
        self,
        obs_dim: int,
        n_assets: int,
        n_features: int,
        hidden: list[int],
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        per_asset = (obs_dim - n_assets - 1) // n_assets
        if per_asset * n_assets + n_assets + 1 != obs_dim or per_asset % n_features:
            raise ValueError(
                f"an observation of {obs_dim} values does not split into {n_assets} assets x "
                f"window x {n_features} features + {n_assets} weights + cash"
            )
        self.n_assets, self.n_features = n_assets, n_features
        self.window = per_asset // n_features
        width = hidden[-1]
        self.encoder = _mlp([self.window * n_features + 1, *hidden], activation)
        self.asset_head = nn.Sequential(_mlp([2 * width, width], activation), nn.Linear(width, 1))
        self.cash_head = nn.Sequential(_mlp([width + 1, width], activation), nn.Linear(width, 1))
        self.value_body = _mlp([width + 1, width], activation)
        for head in (self.asset_head, self.cash_head):  # start near equal scores
            last = head[-1]
            assert isinstance(last, nn.Linear)
            nn.init.orthogonal_(last.weight, gain=0.01)
            nn.init.zeros_(last.bias)
        self.latent_dim_pi = n_assets + 1
        self.latent_dim_vf = width

    def _encode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, f, w = self.n_assets, self.n_features, self.window
        batch = obs.shape[0]
        feats = obs[:, : w * n * f].reshape(batch, w, n, f).permute(0, 2, 1, 3)
        weights = obs[:, w * n * f : w * n * f + n].unsqueeze(-1)
        cash = obs[:, -1:]
        codes = self.encoder(torch.cat([feats.reshape(batch, n, w * f), weights], dim=-1))
        return codes, codes.mean(dim=1), cash

    def _actor(self, codes: torch.Tensor, context: torch.Tensor, cash: torch.Tensor):
        expanded = context.unsqueeze(1).expand_as(codes)
        asset_scores = self.asset_head(torch.cat([codes, expanded], dim=-1)).squeeze(-1)
        cash_score = self.cash_head(torch.cat([context, cash], dim=-1))
        return torch.cat([asset_scores, cash_score], dim=-1)

    def _critic(self, context: torch.Tensor, cash: torch.Tensor) -> torch.Tensor:
        return self.value_body(torch.cat([context, cash], dim=-1))

    def forward_actor(self, obs: torch.Tensor) -> torch.Tensor:
        return self._actor(*self._encode(obs))

    def forward_critic(self, obs: torch.Tensor) -> torch.Tensor:
        _, context, cash = self._encode(obs)
        return self._critic(context, cash)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # one encoding for both heads: the encoder is most of the policy's cost
        codes, context, cash = self._encode(obs)
        return self._actor(codes, context, cash), self._critic(context, cash)


class AssetwisePolicy(ActorCriticPolicy):
    """Actor-critic policy with :class:`AssetwiseExtractor`; see the module docstring.

    Args (``policy_kwargs``):
        n_features: features per asset and bar (``len(env.features)``), default 1.
        net_arch: hidden sizes of the shared per-asset encoder (default ``[64, 64]``).
        activation_fn: default ``nn.Tanh``.
        log_std_init: initial log standard deviation of the scores.

    The Gaussian's log standard deviation has two parameters, one shared by every asset and
    one for cash, so sampling is permutation-equivariant too.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Any,
        *args: Any,
        n_features: int = 1,
        **kwargs: Any,
    ) -> None:
        self.n_assets = int(action_space.shape[0]) - 1
        self.n_features = int(n_features)
        kwargs.setdefault("ortho_init", False)  # the extractor initialises itself
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch if isinstance(self.net_arch, list) and self.net_arch else [64, 64]
        if isinstance(arch[0], dict):
            raise ValueError("AssetwisePolicy takes net_arch as a list of hidden sizes")
        # SB3 annotates mlp_extractor as its MlpExtractor, though its docs replace it with any
        # module that has latent_dim_pi and latent_dim_vf, as here
        self.mlp_extractor = AssetwiseExtractor(  # type: ignore[assignment]
            int(self.features_dim),
            self.n_assets,
            self.n_features,
            list(arch),
            self.activation_fn,
        )

    def _build(self, lr_schedule: Any) -> None:
        if not isinstance(self.action_dist, DiagGaussianDistribution):
            raise ValueError("AssetwisePolicy needs a Box action space (the softmax mapping)")
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # the extractor's actor output is the mean action
        self.log_std = nn.Parameter(torch.full((2,), float(self.log_std_init)))
        # again: the parameters changed. SB3 types optimizer_class as the base Optimizer, whose
        # __init__ takes no lr; SB3's own _build ignores the same error
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Any:
        log_std = torch.cat([self.log_std[:1].expand(self.n_assets), self.log_std[1:]])
        return self.action_dist.proba_distribution(self.action_net(latent_pi), log_std)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["n_features"] = self.n_features
        return data


POLICIES: dict[str, type] = {"AssetwisePolicy": AssetwisePolicy}
