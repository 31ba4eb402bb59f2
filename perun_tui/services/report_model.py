"""The base of every model the performance report is made of (metrics, scores, replays,
suggestions): plain data that serializes to `perun report --json`, with unknown fields
refused so a typo in a constructor fails loudly."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
