"""Perun: an LLM trading terminal."""

__version__ = "0.1.0"
