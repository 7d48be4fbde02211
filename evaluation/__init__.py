"""Evaluation: metrics, the backtest runner and the command-line interface."""
