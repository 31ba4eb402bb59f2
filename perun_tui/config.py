"""Settings: ``perun.toml`` + ``.env`` + environment, validated by pydantic.

Load order (later wins): the config file (``--config``, else ``./perun.toml``, else the
user config dir), then ``.env`` in the working directory, then the process environment.
Environment keys are ``PERUN_<SECTION>__<KEY>``, plus the names users already have
(``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``, ``OLLAMA_HOST``) and the original Perun
names (``TRADING_FREQUENCY_MINUTES``, ``MARKET_OPEN_CHECK_ENABLED``, ``TRADING_SYMBOLS``).

Any invalid input raises ``ConfigError`` with one message that names the key, the value
(masked for secrets), where it came from, and what is allowed. Nothing is written before
the settings are valid.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

APP_NAME = "perun"
TICKER_RE = re.compile(r"^[A-Z][A-Z0-9]{0,5}([.\-/][A-Z0-9]{1,3})?$")
SECRET_KEYS = frozenset(
    {("alpaca", "key_id"), ("alpaca", "secret_key"), ("notify", "smtp_password")}
)

LEGACY_ENV: dict[str, tuple[str, str]] = {
    "APCA_API_KEY_ID": ("alpaca", "key_id"),
    "APCA_API_SECRET_KEY": ("alpaca", "secret_key"),
    "OLLAMA_HOST": ("llm", "host"),
    "TRADING_FREQUENCY_MINUTES": ("trading", "frequency_minutes"),
    "MARKET_OPEN_CHECK_ENABLED": ("trading", "market_hours_only"),
    "TRADING_SYMBOLS": ("trading", "symbols"),
}


class ConfigError(Exception):
    """Invalid configuration; the message is meant for the user as is. Exit code 2."""

    exit_code = 2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TradingSettings(_Section):
    mode: Literal["sim", "paper", "live"] = "sim"
    symbols: list[str] = Field(
        default_factory=lambda: ["AAPL", "MSFT", "NVDA", "SPY"], min_length=1, max_length=200
    )
    frequency_minutes: int = Field(15, ge=1, le=390)
    market_hours_only: bool = True
    live_confirm: bool = False
    fractional: bool = False
    order_type: Literal["market", "limit"] = "market"
    order_size: Literal["qty", "notional"] = "qty"
    limit_band_pct: float = Field(0.2, ge=0, le=5)
    history_bars: int = Field(60, ge=25, le=1000)

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("symbols")
    @classmethod
    def _tickers(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for raw in v:
            sym = raw.strip().upper()
            if not TICKER_RE.match(sym):
                raise ValueError(
                    f"{raw!r} is not a ticker (1–6 letters/digits starting with a letter, "
                    "optionally a class suffix like BRK.B)"
                )
            if sym not in out:
                out.append(sym)
        return out


class ApprovalSettings(_Section):
    mode: Literal["manual", "threshold", "auto"] = "manual"
    auto_min_confidence: float = Field(0.8, ge=0, le=1)
    ttl_minutes: float = Field(15, gt=0, le=1440)
    max_drift_pct: float = Field(1.0, gt=0, le=50)


class RiskSettings(_Section):
    max_position_pct: float = Field(10, gt=0, le=100)
    max_open_positions: int = Field(5, ge=1, le=500)
    max_order_notional: float = Field(5000, gt=0)
    risk_per_trade_pct: float = Field(1.0, gt=0, le=100)
    default_stop_pct: float = Field(2.0, gt=0, le=50)
    min_confidence: float = Field(0.55, ge=0, le=1)
    daily_loss_limit_pct: float = Field(3, gt=0, le=100)
    cooldown_minutes: float = Field(60, ge=0, le=10080)
    max_orders_per_cycle: int = Field(5, ge=1, le=500)
    max_quote_age_s: float = Field(900, gt=0)
    buying_power_reserve_pct: float = Field(0.5, ge=0, le=50)
    allow_short: bool = False
    cancel_on_halt: bool = False


class LLMSettings(_Section):
    provider: Literal["ollama", "rules"] = "ollama"
    model: str = Field("qwen3:8b", min_length=1)
    host: str = "http://127.0.0.1:11434"
    think: bool = True
    temperature: float = Field(0.2, ge=0, le=2)
    timeout_s: float = Field(120, gt=0, le=3600)
    deadline_s: float = Field(600, gt=0, le=7200)
    fallback: Literal["rules", "none"] = "rules"
    keep_alive: str = "10m"
    num_ctx: int = Field(8192, ge=512)
    num_predict: int = Field(2048, ge=64)
    seed: int | None = None
    prompt_path: str = ""

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return ollama_url(v)


def ollama_url(value: str) -> str:
    """``OLLAMA_HOST`` as Ollama itself reads it: ``gpu`` → ``http://gpu:11434``,
    ``0.0.0.0`` → ``http://0.0.0.0:11434``, ``:8080`` → ``http://127.0.0.1:8080``; with a
    scheme and no port the scheme's own port applies (``https://box`` → 443)."""
    text = value.strip()
    if not text:
        raise ValueError("must not be empty, e.g. http://127.0.0.1:11434")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    if scheme not in ("http", "https") or not re.match(r"^[^\s/?#]*(/[^\s]*)?$", rest):
        raise ValueError("must be an http(s) URL or host[:port], e.g. http://127.0.0.1:11434")
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port; e.g. http://127.0.0.1:11434") from None
    if port is None:
        port = 11434 if not sep else (443 if scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


class AlpacaSettings(_Section):
    feed: Literal["iex", "sip"] = "iex"
    trading_url: str = ""
    data_url: str = ""
    stream_url: str = ""
    key_id: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    request_timeout_s: float = Field(10, gt=0, le=300)
    max_requests_per_minute: int = Field(150, ge=1, le=10000)

    @field_validator("trading_url", "data_url", "stream_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v and not re.match(r"^(https?|wss?)://[^\s/]+", v):
            raise ValueError("must be empty (Alpaca's own) or a URL like https://host")
        return v


class SimSettings(_Section):
    seed: int = 42
    speed: float = Field(30, gt=0, le=100000)
    starting_cash: float = Field(100000, gt=0)
    start: str = ""

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> Any:
        if isinstance(v, dt.date):  # a TOML date literal
            return v.isoformat()
        if isinstance(v, str) and v.strip():
            try:
                day = dt.date.fromisoformat(v.strip())
            except ValueError:
                raise ValueError("must be empty or a date like 2026-11-30") from None
            if not 2000 <= day.year <= 2100:
                raise ValueError("must be a date between 2000 and 2100")
            return day.isoformat()
        return v

    @property
    def start_date(self) -> dt.date | None:
        """The session the simulation starts at when its database has no later time."""
        return dt.date.fromisoformat(self.start) if self.start else None


class StorageSettings(_Section):
    path: str = ""


NOTIFY_EVENTS = (
    "fills",
    "rejections",
    "halts",
    "analysis_failures",
    "daily_summary",
    "pending",
    "changes",
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _split_list(v: Any) -> Any:
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            return json.loads(text)
        return [s for s in re.split(r"[,\s]+", text) if s]
    return v


def _known_events(v: list[str]) -> list[str]:
    out: list[str] = []
    for raw in v:
        name = raw.strip().lower()
        if name not in NOTIFY_EVENTS:
            raise ValueError(f"{raw!r} is not a notification event")
        if name not in out:
            out.append(name)
    return out


class NotifySettings(_Section):
    bell: bool = True
    bell_events: list[str] = Field(
        default_factory=lambda: ["pending", "halts", "rejections", "analysis_failures"]
    )
    toast_events: list[str] = Field(default_factory=lambda: list(NOTIFY_EVENTS))
    webhook_url: str = ""
    webhook_format: Literal["auto", "generic", "slack", "mattermost", "discord"] = "auto"
    webhook_events: list[str] = Field(
        default_factory=lambda: [
            "fills", "rejections", "halts", "analysis_failures", "daily_summary", "changes"
        ]
    )
    webhook_timeout_s: float = Field(5, gt=0, le=60)
    email_to: list[str] = Field(default_factory=list)
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    smtp_cafile: str = ""
    smtp_timeout_s: float = Field(10, gt=0, le=120)
    email_events: list[str] = Field(
        default_factory=lambda: ["halts", "analysis_failures", "daily_summary"]
    )
    rate_limit_per_minute: int = Field(20, ge=1, le=1000)
    dedup_window_s: float = Field(60, ge=0, le=86400)
    daily_summary: bool = True

    @field_validator(
        "webhook_events", "email_events", "bell_events", "toast_events", "email_to",
        mode="before",
    )
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("webhook_events", "email_events", "bell_events", "toast_events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        return _known_events(v)

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for addr in v:
            if not _EMAIL_RE.match(addr):
                raise ValueError(f"{addr!r} is not an email address")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str) -> str:
        v = v.strip()
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be empty (off) or an http(s) URL")
        return v


class OptimizationSettings(_Section):
    every_cycles: int = Field(20, ge=1)
    auto_apply: bool = False
    horizons: list[int] = Field(default_factory=lambda: [1, 5, 20], min_length=1, max_length=6)
    primary_horizon: int = Field(5, ge=1, le=500)
    min_samples: int = Field(8, ge=3, le=10000)
    max_p_value: float = Field(0.2, gt=0, le=1)
    auto_apply_keys: list[str] = Field(
        default_factory=lambda: ["risk.min_confidence", "approval.auto_min_confidence"]
    )
    auto_max_p_value: float = Field(0.1, gt=0, le=1)
    max_step_pct: float = Field(15, gt=0, le=100)
    confidence_bounds: list[float] = Field(
        default_factory=lambda: [0.5, 0.9], min_length=2, max_length=2
    )
    replay_steps: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1, max_length=6)
    window_days: int = Field(30, ge=0, le=3650)

    @field_validator("horizons", "replay_steps", "auto_apply_keys", "confidence_bounds",
                     mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("horizons", "replay_steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if any(h < 1 or h > 500 for h in v):
            raise ValueError("each must be a whole number of cycles from 1 to 500")
        return sorted(set(v))

    @field_validator("confidence_bounds")
    @classmethod
    def _bounds(cls, v: list[float]) -> list[float]:
        lo, hi = v
        if not 0 <= lo < hi <= 1:
            raise ValueError("must be [low, high] with 0 ≤ low < high ≤ 1")
        return v

    @field_validator("auto_apply_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            section, _, name = key.partition(".")
            model = Settings.model_fields.get(section)
            ann = model.annotation if model is not None else None
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)
                    and name in ann.model_fields):
                raise ValueError(f"{key!r} is not a settings key (section.key)")
        return v

    @field_validator("primary_horizon")
    @classmethod
    def _primary_in_horizons(cls, v: int, info: ValidationInfo) -> int:
        horizons = info.data.get("horizons")
        if horizons is not None and v not in horizons:
            raise ValueError(f"must be one of optimization.horizons {horizons}")
        return v


class Settings(_Section):
    trading: TradingSettings = Field(default_factory=TradingSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    alpaca: AlpacaSettings = Field(default_factory=AlpacaSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    optimization: OptimizationSettings = Field(default_factory=OptimizationSettings)

    # not settable from files: where the settings came from, for `perun doctor`
    source: str = Field("defaults", exclude=True)

    @model_validator(mode="after")
    def _order_rules(self) -> Settings:
        """Alpaca's rule: fractional quantities and dollar amounts only on market orders."""
        t = self.trading
        if t.order_type == "limit" and (t.fractional or t.order_size == "notional"):
            what = (
                'trading.order_size = "notional"'
                if t.order_size == "notional"
                else "trading.fractional = true"
            )
            raise ValueError(
                f'{what} needs trading.order_type = "market" (it is "limit"): Alpaca takes '
                "fractional quantities and dollar amounts only on market orders with "
                'time_in_force day. Use order_type = "market", or whole shares '
                '(fractional = false, order_size = "qty").'
            )
        if t.order_size == "notional" and not t.fractional:
            raise ValueError(
                'trading.order_size = "notional" buys fractional shares: it needs '
                'trading.fractional = true (or order_size = "qty" for whole shares)'
            )
        return self

    @model_validator(mode="after")
    def _live_needs_opt_in(self) -> Settings:
        if self.trading.mode == "live" and not self.trading.live_confirm:
            raise ValueError(
                'trading.mode = "live" needs trading.live_confirm = true in the config '
                "(an explicit opt-in to trade real money)"
            )
        return self

    @property
    def mode(self) -> str:
        return self.trading.mode

    def data_dir(self) -> Path:
        if self.storage.path:
            return Path(self.storage.path).expanduser()
        return Path(platformdirs.user_data_dir(APP_NAME))

    def database_path(self) -> Path:
        """One database per mode, so simulated and real history never mix."""
        return self.data_dir() / f"perun-{self.trading.mode}.db"

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, safe to print or store."""
        data = self.model_dump(mode="python")
        for section, key in SECRET_KEYS:
            value = getattr(getattr(self, section), key).get_secret_value()
            data[section][key] = mask_secret(value)
        return data

    def secret_values(self) -> list[str]:
        """Every secret in use, for the redacting log filter: the keys and passwords, and
        a webhook URL's path and query (Slack, Discord and Mattermost put the token there)."""
        out = []
        for section, key in SECRET_KEYS:
            value = getattr(getattr(self, section), key).get_secret_value()
            if value:
                out.append(value)
        url = urlsplit(self.notify.webhook_url)
        token = url.path.strip("/") + (f"?{url.query}" if url.query else "")
        if len(token) >= 8:  # `/hook` alone is no secret, and masking it would garble text
            out.append(token)
        return out


def mask_secret(value: str) -> str:
    if not value:
        return "(not set)"
    if len(value) <= 8:
        return "****"
    return f"{value[:2]}…{value[-2:]} ({len(value)} chars)"


# --------------------------------------------------------------------------- loading


def user_config_file() -> Path:
    """The user's own perun.toml (platformdirs): the last place a config file is looked
    for, and where `perun apply` creates one when no file is in use."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "perun.toml"


def find_config_file(
    explicit: str | os.PathLike[str] | None, cwd: Path | None = None
) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (given with --config)")
        return path
    local = (cwd or Path.cwd()) / "perun.toml"
    if local.is_file():
        return local
    user = user_config_file()
    if user.is_file():
        return user
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix the file and start again.") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from exc


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _env_layer(
    env: Mapping[str, str], origin: str, sources: dict[tuple[str, str], str]
) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    # legacy / standard names first so PERUN_* wins when both are set
    for name, (section, key) in LEGACY_ENV.items():
        if name in env and env[name] != "":
            layer.setdefault(section, {})[key] = env[name]
            sources[(section, key)] = f"{origin} {name}"
    for name, value in env.items():
        if not name.startswith("PERUN_"):
            continue
        if "__" not in name:
            _refuse_single_underscore(name, origin)
            continue
        section, _, key = name[len("PERUN_") :].lower().partition("__")
        layer.setdefault(section, {})[key] = value
        sources[(section, key)] = f"{origin} {name}"
    return layer


def _refuse_single_underscore(name: str, origin: str) -> None:
    """``PERUN_RISK_MAX_ORDER_NOTIONAL`` looks like a setting but would be ignored: a risk
    limit silently not applied is worse than a refusal to start."""
    rest = name[len("PERUN_") :].lower()
    for section, field in Settings.model_fields.items():
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            continue
        key = rest.removeprefix(section + "_")
        if key != rest and key in ann.model_fields:
            raise ConfigError(
                f"{name} (from {origin}) is not read: nested keys take two underscores, "
                f"PERUN_{section.upper()}__{key.upper()}"
            )


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for section, values in layer.items():
        if isinstance(values, Mapping) and isinstance(base.get(section), dict):
            base[section].update(values)
        else:
            base[section] = dict(values) if isinstance(values, Mapping) else values


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}
_OPS = {
    "ge": "≥",
    "gt": ">",
    "le": "≤",
    "lt": "<",
    "min_length": "at least",
    "max_length": "at most",
}


_EVENT_LIST = "a list of events (" + ", ".join(NOTIFY_EVENTS) + ")"
_LIST_NAMES = {
    "symbols": "a list of tickers",
    "webhook_events": _EVENT_LIST,
    "email_events": _EVENT_LIST,
    "bell_events": _EVENT_LIST,
    "toast_events": _EVENT_LIST,
    "email_to": "a list of email addresses",
    "auto_apply_keys": "a list of settings keys (section.key)",
    "horizons": "a list of cycle counts",
    "replay_steps": "a list of cycle counts",
    "confidence_bounds": "[low, high] between 0 and 1",
}


def _describe_type(ann: Any, field: str = "") -> str:
    args = get_args(ann)
    if get_origin(ann) is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if get_origin(ann) is list:
        return _LIST_NAMES.get(field, "a list")
    name = getattr(ann, "__name__", str(ann))
    return _TYPE_NAMES.get(name, name)


def _allowed(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    """What is allowed at a location: the known keys or the field's type and bounds."""
    current: type[BaseModel] = model
    for i, part in enumerate(loc):
        fields = current.model_fields
        if part not in fields:
            return "known keys: " + ", ".join(k for k in fields if k != "source")
        info = fields[str(part)]
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and i < len(loc) - 1:
            current = ann
            continue
        bounds = []
        for meta in info.metadata:
            for attr, op in _OPS.items():
                value = getattr(meta, attr, None)
                if value is not None:
                    item = "item(s)" if "length" in attr else ""
                    bounds.append(f"{op} {value}{(' ' + item) if item else ''}")
        return _describe_type(ann, str(part)) + (" " + ", ".join(bounds) if bounds else "")
    return "see perun.toml for the documented keys"


def _format_errors(
    exc: ValidationError, sources: dict[tuple[str, str], str], file_label: str
) -> str:
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(file)"
        key2 = (str(loc[0]), str(loc[1])) if len(loc) >= 2 else ("", "")
        origin = sources.get(key2) or next(
            (src for (sec, _), src in sources.items() if loc and sec == str(loc[0])),
            file_label if loc else "settings",
        )
        value = err.get("input")
        if key2 in SECRET_KEYS:
            shown = "****"
        elif isinstance(value, dict):
            shown = "{…}"
        else:
            shown = json.dumps(value, default=str)
        if err["type"] == "extra_forbidden":
            lines.append(
                f"unknown key {dotted} (from {origin}); {_allowed(Settings, (*loc[:-1], '?'))}"
            )
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc:
            lines.append(f"{msg} (from {origin})")
            continue
        lines.append(
            f"{dotted} = {shown} (from {origin}) is invalid: {msg}; "
            f"allowed: {_allowed(Settings, loc[:2])}"
        )
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    mode: str | None = None,
    use_dotenv: bool = True,
) -> Settings:
    """Build validated settings from the layers; raises ``ConfigError`` on any problem."""
    environ = os.environ if env is None else env
    sources: dict[tuple[str, str], str] = {}
    data: dict[str, Any] = {}
    path = find_config_file(config, cwd)
    file_label = str(path) if path else "defaults"
    if path is not None:
        raw = _read_toml(path)
        for section, values in raw.items():
            if isinstance(values, dict):
                for key in values:
                    sources[(section, key)] = str(path)
        _merge(data, raw)
    if use_dotenv:
        dotenv = _read_dotenv((cwd or Path.cwd()) / ".env")
        _merge(data, _env_layer(dotenv, ".env", sources))
    _merge(data, _env_layer(environ, "environment", sources))
    if mode is not None:
        data.setdefault("trading", {})["mode"] = mode
        sources[("trading", "mode")] = "--mode"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, sources, file_label)) from None
    settings.source = file_label
    return settings
