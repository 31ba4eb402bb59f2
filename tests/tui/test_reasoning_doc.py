"""The reasoning document: channels, JSON replies, errors and the size guards."""

from __future__ import annotations

from perun_tui.events import AnalysisFinished
from perun_tui.tui.widgets.reasoning import MAX_DOC_CHARS, SOFT_BREAK, _Doc


def test_thinking_then_json_content_is_fenced() -> None:
    doc = _Doc(cycle=1)
    doc.add("thinking", "AAPL looks strong.")
    doc.add("content", '{"signals": [')
    doc.add("content", "]}")
    doc.finish(AnalysisFinished(1, "qwen3:8b", "calm", 0, 2.0, tokens=10))
    text = doc.text
    assert text.startswith("*thinking…*")
    assert "```json\n{\"signals\": [" in text
    assert text.count("```") == 2


def test_a_failed_analysis_says_so() -> None:
    doc = _Doc(cycle=2)
    doc.finish(AnalysisFinished(2, "qwen3:8b", "", 0, 0.5, error="HTTP 500 ```x```"))
    assert "Analysis failed" in doc.text
    assert doc.text.count("```") == 2  # the error cannot close the fence early


def test_runaway_paragraphs_are_split_and_documents_capped() -> None:
    doc = _Doc(cycle=3)
    for _ in range(200):
        doc.add("thinking", "word " * 10)
    longest = max(len(p) for p in doc.text.split("\n\n"))
    assert longest <= SOFT_BREAK + 60
    for _ in range(2000):
        doc.add("thinking", "more words here ")
    assert doc.size <= MAX_DOC_CHARS + 200
    assert "display limit reached" in doc.text
