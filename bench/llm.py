"""Benchmark the Ollama analyst's prompt size and orchestration cost per cycle.

For 5, 20 and 50 symbols it prints the prompt size (characters and estimated tokens —
digits one each, see ``perun_tui/llm/prompt.py``), tokens per symbol (total / symbols, and
the marginal cost of one more symbol), how many LLM calls a cycle makes (counted at the
fake server), and the orchestration overhead: the median time of ``analyze()`` against a
zero-latency loopback fake, next to the median time of a bare ``AsyncClient.chat`` call
that sends the same prompt and reads the same streamed reply (the baseline, measured in
the same run, interleaved). overhead = analyze − bare chat: prompt building, batching the
deltas, validation. Loopback timings jitter by about a millisecond, so the in-process part
(building the prompt and validating the reply, no I/O) is also timed on its own.

    python bench/llm.py [--runs 40] [--symbols 5,20,50]

The last line is JSON for the largest universe:
``{"bench":"llm","symbols":50,"calls_per_cycle":1,"prompt_tokens_est":…,
"tokens_per_symbol":…,"overhead_ms":…}``. Targets: one call per cycle at any size,
≤ 120 prompt tokens per symbol.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ollama  # noqa: E402

from perun_tui.config import LLMSettings  # noqa: E402
from perun_tui.llm.ollama import OllamaAnalyst  # noqa: E402
from perun_tui.llm.prompt import build_prompt, load_templates  # noqa: E402
from perun_tui.llm.schema import parse_reply, reply_schema  # noqa: E402
from tests.fakes.contexts import make_context  # noqa: E402
from tests.fakes.ollama_server import FakeOllama, Reply  # noqa: E402

MODEL = "qwen3:8b"


def reply_for(symbols: list[str]) -> Reply:
    """A realistic reply: a market view and a signal for every fifth symbol."""
    signals = [
        {
            "symbol": s,
            "action": "buy" if i % 2 == 0 else "hold",
            "confidence": 0.72,
            "rationale": f"{s} trades above its slow average on rising volume.",
        }
        for i, s in enumerate(symbols[::5])
    ]
    content = json.dumps({"market_view": "Constructive, selective tape.", "signals": signals})
    thinking = "Scanning the table for trend, z-score and volume outliers. " * 6
    return Reply(content=content, thinking=thinking)


async def measure(n: int, runs: int) -> dict[str, Any]:
    templates = load_templates()
    ctx = make_context(n)
    prompt = build_prompt(ctx, templates)
    one_more = build_prompt(make_context(n + 1), templates)
    with FakeOllama(models=[MODEL], default_reply=reply_for(ctx.symbols)) as srv:
        settings = LLMSettings(model=MODEL, host=srv.url, timeout_s=30, seed=1)
        analyst = OllamaAnalyst(settings)
        bare = ollama.AsyncClient(host=srv.url, timeout=30)
        options = {"temperature": 0.2, "seed": 1, "num_ctx": 8192, "num_predict": 2048}
        schema = reply_schema()
        deltas = 0

        def on_delta(channel: str, text: str) -> None:
            nonlocal deltas
            deltas += 1

        async def bare_chat() -> None:
            stream = await bare.chat(
                model=MODEL,
                messages=prompt.messages(),
                stream=True,
                format=schema,
                think=True,
                options=options,
                keep_alive="10m",
            )
            parts = [part async for part in stream]
            assert parts[-1].done

        try:
            # warm up both paths (connections, /api/show cache), then count one cycle
            await analyst.analyze(ctx, on_delta)
            await bare_chat()
            before = len(srv.chat_bodies)
            result = await analyst.analyze(ctx, on_delta)
            calls = len(srv.chat_bodies) - before
            if result.error:
                raise SystemExit(f"bench: analyze failed: {result.error}")
            timed_analyze: list[float] = []
            timed_bare: list[float] = []
            for _ in range(runs):
                started = time.perf_counter()
                await analyst.analyze(ctx, on_delta)
                timed_analyze.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                await bare_chat()
                timed_bare.append((time.perf_counter() - started) * 1000)
        finally:
            await analyst.close()
            await bare.close()  # type: ignore[no-untyped-call]
    # the in-process part alone, without any I/O: build the prompt, validate the reply
    content = reply_for(ctx.symbols).content
    local: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        build_prompt(ctx, templates)
        parse_reply(content, universe=ctx.symbols, limits=ctx.limits)
        local.append((time.perf_counter() - started) * 1000)
    analyze_ms = statistics.median(timed_analyze)
    bare_ms = statistics.median(timed_bare)
    return {
        "symbols": n,
        "prompt_chars": prompt.chars,
        "prompt_tokens_est": prompt.tokens_est,
        "tokens_per_symbol": round(prompt.tokens_est / n, 1),
        "marginal_tokens": one_more.tokens_est - prompt.tokens_est,
        "calls_per_cycle": calls,
        "analyze_ms": round(analyze_ms, 2),
        "bare_chat_ms": round(bare_ms, 2),
        "overhead_ms": round(analyze_ms - bare_ms, 2),
        "build_parse_ms": round(statistics.median(local), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs per size (median)")
    parser.add_argument("--symbols", default="5,20,50", help="universe sizes, comma-separated")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.symbols.split(",") if s.strip()]

    header = (
        f"{'symbols':>7} {'chars':>6} {'tok_est':>7} {'tok/sym':>7} {'marginal':>8} "
        f"{'calls':>5} {'analyze_ms':>10} {'bare_chat_ms':>12} {'overhead_ms':>11} "
        f"{'build+parse_ms':>14}"
    )
    print(header)
    rows = []
    for n in sizes:
        row = asyncio.run(measure(n, args.runs))
        rows.append(row)
        print(
            f"{row['symbols']:>7} {row['prompt_chars']:>6} {row['prompt_tokens_est']:>7} "
            f"{row['tokens_per_symbol']:>7} {row['marginal_tokens']:>8} "
            f"{row['calls_per_cycle']:>5} {row['analyze_ms']:>10} {row['bare_chat_ms']:>12} "
            f"{row['overhead_ms']:>11} {row['build_parse_ms']:>14}"
        )
    print(
        "tokens are estimated pessimistically (digits one each, letters one per four, other "
        "symbols one each); overhead = analyze() − a bare "
        f"AsyncClient.chat with the same prompt and reply (medians of {args.runs}, "
        "interleaved); build+parse = the same work without I/O"
    )
    last = rows[-1]
    print(
        json.dumps(
            {
                "bench": "llm",
                "symbols": last["symbols"],
                "calls_per_cycle": last["calls_per_cycle"],
                "prompt_tokens_est": last["prompt_tokens_est"],
                "tokens_per_symbol": last["tokens_per_symbol"],
                "overhead_ms": last["overhead_ms"],
            },
            separators=(",", ":"),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
