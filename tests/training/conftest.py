import pytest


@pytest.fixture
def reset_mlflow_uri():
    """Training and tuning call mlflow.set_tracking_uri, which outlives the test: undo it
    (not for test_mlflow_server.py, whose module-wide server sets it once)."""
    import mlflow

    yield
    mlflow.set_tracking_uri(None)
