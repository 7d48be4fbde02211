"""Bundled real market data; see README.md here for sources and licences."""
