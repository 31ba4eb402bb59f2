"""Screens of the Perun terminal."""
