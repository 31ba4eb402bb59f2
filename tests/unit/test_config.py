"""Configuration: layers, aliases, and one clear message per bad input (exit code 2)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from perun_tui.cli import build_parser
from perun_tui.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "perun.toml"
    path.write_text(text)
    return path


def test_defaults_are_sim_and_safe(tmp_path: Path) -> None:
    s = load_settings(env={}, cwd=tmp_path, use_dotenv=False)
    assert s.trading.mode == "sim"
    assert s.approval.mode == "manual"
    assert s.trading.symbols == ["AAPL", "MSFT", "NVDA", "SPY"]
    assert s.database_path().name == "perun-sim.db"


def test_repo_perun_toml_is_valid_and_has_every_key() -> None:
    repo = Path(__file__).resolve().parents[2]
    import tomllib

    from perun_tui.config import Settings

    data = tomllib.loads((repo / "perun.toml").read_text())
    for section, model in Settings.model_fields.items():
        if section == "source":
            continue
        annotation = model.annotation
        assert annotation is not None
        fields = set(annotation.model_fields)  # type: ignore[union-attr]
        listed = set(data.get(section, {}))
        secrets = {"key_id", "secret_key", "seed"}
        assert fields - listed - secrets == set(), f"[{section}] misses keys"
    load_settings(repo / "perun.toml", env={}, use_dotenv=False)


def test_layers_file_then_dotenv_then_environment(tmp_path: Path) -> None:
    write(tmp_path, '[trading]\nfrequency_minutes = 30\nsymbols = ["AAPL"]\n')
    (tmp_path / ".env").write_text("PERUN_TRADING__FREQUENCY_MINUTES=20\nTRADING_SYMBOLS=MSFT\n")
    s = load_settings(env={}, cwd=tmp_path)
    assert s.trading.frequency_minutes == 20
    assert s.trading.symbols == ["MSFT"]
    s = load_settings(env={"PERUN_TRADING__FREQUENCY_MINUTES": "5"}, cwd=tmp_path)
    assert s.trading.frequency_minutes == 5


def test_original_and_standard_names(tmp_path: Path) -> None:
    env = {
        "TRADING_SYMBOLS": "aapl, msft NVDA",
        "TRADING_FREQUENCY_MINUTES": "5",
        "MARKET_OPEN_CHECK_ENABLED": "false",
        "OLLAMA_HOST": "10.0.0.5:11434",
        "APCA_API_KEY_ID": "PKABCDEFGH123",
        "APCA_API_SECRET_KEY": "supersecretvalue",
    }
    s = load_settings(env=env, cwd=tmp_path, use_dotenv=False)
    assert s.trading.symbols == ["AAPL", "MSFT", "NVDA"]
    assert s.trading.frequency_minutes == 5
    assert s.trading.market_hours_only is False
    assert s.llm.host == "http://10.0.0.5:11434"
    assert s.alpaca.secret_key.get_secret_value() == "supersecretvalue"
    assert "supersecretvalue" not in repr(s)
    assert "supersecretvalue" not in str(s.redacted())


def test_perun_names_win_over_legacy_names(tmp_path: Path) -> None:
    env = {"TRADING_FREQUENCY_MINUTES": "5", "PERUN_TRADING__FREQUENCY_MINUTES": "10"}
    assert load_settings(env=env, cwd=tmp_path, use_dotenv=False).trading.frequency_minutes == 10


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[trading\nmode = 1", {}, "not valid TOML"),
        ("[trading]\nfrequncy_minutes = 5\n", {}, "unknown key trading.frequncy_minutes"),
        ("[bogus]\nx = 1\n", {}, "unknown key bogus"),
        ('[trading]\nfrequency_minutes = "often"\n', {}, "trading.frequency_minutes"),
        ("[trading]\nfrequency_minutes = 0\n", {}, "≥ 1"),
        ("[risk]\nmax_position_pct = 150\n", {}, "risk.max_position_pct = 150"),
        ("[trading]\nsymbols = []\n", {}, "trading.symbols = []"),
        ('[trading]\nsymbols = ["AAPL", "NOT A TICKER"]\n', {}, "is not a ticker"),
        ('[trading]\nmode = "yolo"\n', {}, 'one of "sim", "paper", "live"'),
        ('[trading]\nmode = "live"\n', {}, "live_confirm"),
        ("", {"PERUN_APPROVAL__MODE": "sometimes"}, "environment PERUN_APPROVAL__MODE"),
        ("", {"PERUN_APPROVAL__AUTO_MIN_CONFIDENCE": "1.5"}, "≤ 1"),
        ("", {"TRADING_SYMBOLS": "AAPL,$$$"}, "environment TRADING_SYMBOLS"),
        ('[sim]\nstart = "last tuesday"\n', {}, "a date like 2026-11-30"),
        (
            '[trading]\nfractional = true\norder_type = "limit"\n',
            {},
            'trading.fractional = true needs trading.order_type = "market"',
        ),
        ('[trading]\norder_size = "notional"\n', {}, "needs trading.fractional = true"),
        (
            "",
            {"PERUN_TRADING__ORDER_SIZE": "notional", "PERUN_TRADING__FRACTIONAL": "true",
             "PERUN_TRADING__ORDER_TYPE": "limit"},
            'trading.order_size = "notional" needs trading.order_type = "market"',
        ),
        ('[trading]\norder_size = "shares"\n', {}, '"qty", "notional"'),
    ],
)
def test_bad_config_names_key_value_and_allowed(
    tmp_path: Path, toml: str, env: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env=env, cwd=tmp_path, use_dotenv=False)
    assert expected in str(err.value)
    assert "Traceback" not in str(err.value)


def test_secret_values_are_masked_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, '[alpaca]\nkey_id = 12\nsecret_key = ["oops-secret-value"]\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={}, cwd=tmp_path, use_dotenv=False)
    assert "oops-secret-value" not in str(err.value)


def test_a_webhook_urls_token_is_a_secret(tmp_path: Path) -> None:
    """Slack/Discord/Mattermost webhook URLs carry their token in the path: it is masked
    wherever the URL could be printed; a bare `/hook` path is left alone."""
    from perun_tui.redact import redact, register_secrets

    url = "https://hooks.slack.com/services/T0CANARY/B0CANARY/wHkCanaryTok3n?x=1"
    env = {"PERUN_NOTIFY__WEBHOOK_URL": url}
    settings = load_settings(env=env, cwd=tmp_path, use_dotenv=False)
    register_secrets(settings.secret_values())
    shown = redact(f"webhook POST {url} failed: 404")
    assert "wHkCanaryTok3n" not in shown and "T0CANARY" not in shown
    assert "hooks.slack.com" in shown  # where it went is still said
    plain = {"PERUN_NOTIFY__WEBHOOK_URL": "http://127.0.0.1:8080/hook"}
    assert load_settings(env=plain, cwd=tmp_path, use_dotenv=False).secret_values() == []


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={}, use_dotenv=False)


def test_cli_exits_2_before_writing_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # not ./perun.toml: the file must be found through --config given before the command
    path = tmp_path / "elsewhere.toml"
    path.write_text(f'[storage]\npath = "{data}"\n[risk]\nmax_open_positions = -1\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "perun_tui.cli",
            "--config",
            str(path),
            "run",
            "--headless",
            "--cycles",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "risk.max_open_positions = -1" in proc.stderr
    assert proc.stderr.count("\n") <= 3  # one message, no traceback
    assert not data.exists()


def test_sim_start_takes_a_toml_date_or_text(tmp_path: Path) -> None:
    path = write(tmp_path, "[sim]\nstart = 2026-11-30\n")
    assert load_settings(path, env={}, use_dotenv=False).sim.start_date == dt.date(2026, 11, 30)
    path.unlink()
    env = {"PERUN_SIM__START": "2026-11-24"}
    assert load_settings(env=env, cwd=tmp_path, use_dotenv=False).sim.start == "2026-11-24"
    assert load_settings(env={}, cwd=tmp_path, use_dotenv=False).sim.start_date is None


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),  # OLLAMA_HOST without a port: Ollama's port
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        (":11500", "http://127.0.0.1:11500"),
        ("https://llm.example", "https://llm.example:443"),
        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
        ("[::1]", "http://[::1]:11434"),
    ],
)
def test_ollama_host_is_read_as_ollama_reads_it(tmp_path: Path, given: str, used: str) -> None:
    settings = load_settings(env={"OLLAMA_HOST": given}, cwd=tmp_path, use_dotenv=False)
    assert settings.llm.host == used


def test_bad_ollama_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm\.host"):
        load_settings(env={"OLLAMA_HOST": "ftp://x"}, cwd=tmp_path, use_dotenv=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "X.toml", "--mode", "paper", "run", "--headless"],
        ["run", "--headless", "--config", "X.toml", "--mode", "paper"],
        ["--mode", "paper", "halt", "--config", "X.toml"],
    ],
)
def test_global_flags_count_before_and_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.config, args.mode) == ("X.toml", "paper")


@pytest.mark.parametrize("cycles", ["0", "-3", "two"])
def test_cycles_must_be_a_positive_number(cycles: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "--headless", "--cycles", cycles])
    assert exit_.value.code == 2


def test_a_setting_with_one_underscore_is_refused_not_ignored(tmp_path: Path) -> None:
    env = {"PERUN_RISK_MAX_ORDER_NOTIONAL": "100", "PERUN_SLOW": "1"}
    with pytest.raises(ConfigError, match="PERUN_RISK__MAX_ORDER_NOTIONAL"):
        load_settings(env=env, cwd=tmp_path, use_dotenv=False)
    # other PERUN_ names (the test harness's, say) are not settings and stay allowed
    assert load_settings(env={"PERUN_SLOW": "1"}, cwd=tmp_path, use_dotenv=False)
