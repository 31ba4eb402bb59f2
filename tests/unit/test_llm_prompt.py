"""The compact prompt: every symbol once, limits and memory in it, within the token budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from perun_tui.llm.base import SymbolLimits
from perun_tui.llm.prompt import (
    TABLE_COLUMNS,
    PromptError,
    build_prompt,
    build_repair,
    estimate_tokens,
    load_templates,
    num,
    render,
)
from tests.fakes.contexts import TICKERS, make_context


def table_rows(text: str) -> list[list[str]]:
    return [line.split("|") for line in text.splitlines() if line.count("|") >= 10]


@pytest.mark.parametrize("n", [1, 5, 20, 50])
def test_every_symbol_exactly_once_in_one_row(n: int) -> None:
    ctx = make_context(n)
    prompt = build_prompt(ctx, load_templates())
    rows = table_rows(prompt.user)
    assert rows[0] == list(TABLE_COLUMNS)
    assert [r[0] for r in rows[1:]] == list(TICKERS[:n])
    assert all(len(r) == len(TABLE_COLUMNS) for r in rows)


def test_duplicate_symbols_in_the_context_appear_once() -> None:
    ctx = make_context(3)
    ctx.symbols = [*ctx.symbols, ctx.symbols[0]]
    rows = table_rows(build_prompt(ctx, load_templates()).user)
    assert [r[0] for r in rows[1:]] == list(TICKERS[:3])


def test_row_carries_features_position_and_limits() -> None:
    ctx = make_context(3)  # AAPL holds 40 (sellable); NVDA has a cooldown note
    rows = {r[0]: dict(zip(TABLE_COLUMNS, r, strict=True)) for r in table_rows(
        build_prompt(ctx, load_templates()).user)[1:]}
    f, lim = ctx.features["AAPL"], ctx.limits["AAPL"]
    aapl = rows["AAPL"]
    assert aapl["price"] == num(f.price) and aapl["rsi"] == num(f.rsi, 0)
    assert aapl["held"] == "40" and aapl["sell"] == "y"
    assert aapl["pl"] == num(lim.position_pl_pct, 1)
    assert aapl["maxbuy"] == num(lim.max_buy_qty, 4)
    assert rows["MSFT"]["sell"] == "n" and rows["MSFT"]["pl"] == "-"
    assert rows["NVDA"]["note"] == "cooldown 35 min"


def test_cannot_buy_shows_zero_and_missing_data_is_said() -> None:
    ctx = make_context(3)
    ctx.limits["MSFT"] = SymbolLimits(
        symbol="MSFT", max_buy_qty=12, held_qty=0, can_buy=False, can_sell=False,
        note="max open positions | reached",
    )
    del ctx.features["NVDA"]
    del ctx.limits["NVDA"]
    rows = {r[0]: r for r in table_rows(build_prompt(ctx, load_templates()).user)[1:]}
    assert rows["MSFT"][TABLE_COLUMNS.index("maxbuy")] == "0"
    assert rows["MSFT"][-1] == "max open positions / reached"
    assert rows["NVDA"][1:11] == ["-"] * 10
    assert rows["NVDA"][-1] == "no limits: hold only; no market data"


def test_account_memory_and_time_are_in_the_context() -> None:
    ctx = make_context(2)
    ctx.market_note = "FOMC at 14:00"
    user = build_prompt(ctx, load_templates()).user
    assert user.startswith("Cycle 12 · 2026-03-02 10:45 ET · sim account")
    assert "Cash 80120 · equity 101235 · buying power 80120" in user
    assert "min confidence 0.55" in user and "Note: FOMC at 14:00" in user
    memory = [line for line in user.splitlines() if line.startswith("AAPL: c10 ")]
    assert len(memory) == 1 and memory[0].count(";") == 2  # three entries, newest first
    assert "{{" not in user


def test_memory_is_capped_and_says_none_when_empty() -> None:
    assert "none yet" in build_prompt(make_context(2, memory_per_symbol=0), load_templates()).user
    user = build_prompt(make_context(1, memory_per_symbol=6), load_templates()).user
    (line,) = [x for x in user.splitlines() if x.startswith("AAPL: ")]
    assert line.count(";") == 2


@pytest.mark.parametrize("n", [5, 20, 50])
def test_token_budget_per_symbol(n: int) -> None:
    prompt = build_prompt(make_context(n), load_templates())
    assert prompt.tokens_est == estimate_tokens(prompt.system) + estimate_tokens(prompt.user)
    # one more symbol (its row and three memory entries) costs well under the 120-token
    # budget at any size; the fixed part (rules, account, legend) is paid once, so at 50
    # symbols the whole prompt is within 120 tokens per symbol too
    one_more = build_prompt(make_context(n + 1), load_templates()).tokens_est
    assert one_more - prompt.tokens_est <= 100
    if n >= 50:
        assert prompt.tokens_est / n <= 120


def test_the_estimate_counts_digits_one_by_one() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_tokens("231.42") == 6  # five digits and a point, as Qwen splits them
    assert estimate_tokens("AAPL|231.4|-0.8") == 1 + 1 + 5 + 1 + 1 + 3


def test_number_formatting() -> None:
    assert num(231.4) == "231.4" and num(231.456) == "231.46" and num(-0.001) == "0"
    assert num(12.0, 4) == "12" and num(float("nan")) == "-"


def test_repair_message_states_problems_and_allowed_values() -> None:
    ctx = make_context(4)
    text = build_repair(ctx, load_templates(), ["confidence 1.7 for NVDA is outside 0..1"])
    assert "- confidence 1.7 for NVDA is outside 0..1" in text
    assert "symbol: one of AAPL, MSFT, NVDA, SPY" in text
    assert "buy allowed for every symbol; sell allowed for AAPL" in text
    assert "Keep it short" not in text
    assert "Keep it short" in build_repair(ctx, load_templates(), ["cut"], truncated=True)


def test_override_directory_replaces_templates_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "system.md").write_text("Be brief. Min {{min_confidence}}.\n")
    templates = load_templates(str(tmp_path))
    assert templates.system == "Be brief. Min {{min_confidence}}.\n"
    assert templates.context == load_templates().context
    assert templates.sources[0] == str(tmp_path / "system.md")
    assert templates.sources[1] == "built-in context.md"
    prompt = build_prompt(make_context(2), templates)
    assert prompt.system == "Be brief. Min 0.55.\n"


def test_override_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="is not a directory"):
        load_templates(str(tmp_path / "nope"))
    (tmp_path / "context.md").write_text("{{table}} {{cash_}}")
    unknown = r"context\.md uses unknown placeholder\(s\) \{\{cash_\}\}"
    with pytest.raises(PromptError, match=unknown):
        load_templates(str(tmp_path))
    (tmp_path / "context.md").write_text("  \n")
    with pytest.raises(PromptError, match="is empty"):
        load_templates(str(tmp_path))
    # repair-only placeholders are unknown in the context template
    (tmp_path / "context.md").write_text("{{problems}}")
    with pytest.raises(PromptError, match="problems"):
        load_templates(str(tmp_path))
    # a context without the table (or a repair without the problems) would blind the model
    (tmp_path / "context.md").write_text("Decide. Cash {{cash}}.")
    with pytest.raises(PromptError, match=r"lacks \{\{table\}\}"):
        load_templates(str(tmp_path))
    (tmp_path / "context.md").write_text("{{table}}")
    (tmp_path / "repair.md").write_text("Try again.")
    with pytest.raises(PromptError, match=r"repair\.md lacks \{\{problems\}\}"):
        load_templates(str(tmp_path))


def test_render_collapses_blank_lines() -> None:
    assert render("a\n{{x}}\n\nb", {"x": ""}) == "a\n\nb\n"
