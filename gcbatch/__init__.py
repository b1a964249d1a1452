"""gcbatch: declarative, idempotent batches of Grand Challenge algorithm jobs."""

__version__ = "0.1.0"
