"""Campaign engine: YAML campaigns to per-recipient SMS delivery outcomes in PostgreSQL."""

__version__ = "0.1.0"
