"""Fault injection for Perun: kill it anywhere, restart it, prove nothing is lost or doubled.

``python -m tests.faults --kills 200`` runs the long version (see ``__main__.py``);
``tests/integration/test_crash_safety.py`` runs a bounded one under pytest.
"""
