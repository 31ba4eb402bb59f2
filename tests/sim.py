"""The synthetic market is a function of (seed, symbol, time) and the simulated clock
starts at the latest session by default, so a test that expects the rules analyst to
propose something would depend on the day it runs. Tests pin the session instead."""

SIM_START = "2026-11-24"
