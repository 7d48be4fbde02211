"""Evaluation: metrics, the backtest runner, persisted runs, replay, ensembles and reports."""
