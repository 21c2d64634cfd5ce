"""The weightio version: one literal, read by pyproject.toml too (no import cost at start-up)."""

__version__ = "0.1.0"
