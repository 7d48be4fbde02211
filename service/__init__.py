"""The marketarena service: a FastAPI app over the run store (``marketarena serve``)."""
