"""Panels of the Perun terminal."""
