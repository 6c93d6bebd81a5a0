"""Service settings: command-line flags > ``ANNREC_*`` environment variables > config file > defaults.

Read with pydantic-settings. The optional config file (``--config FILE`` or ``ANNREC_CONFIG``) is
YAML (``.yaml``/``.yml``), JSON (``.json``) or TOML (``.toml``) holding the same keys as the fields
below (``service/config.example.yaml`` lists them all). Unknown keys are rejected, so a typo in the
file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import contextvars
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from annrec.errors import DataNotFoundError, InputError

# Values read from the config file, handed to the settings source below for one construction.
_FILE_VALUES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("annrec_service_file_values",
                                                                                     default=None)
#: Environment variable through which ``annrec serve`` hands its resolved settings to uvicorn workers.
SETTINGS_ENV = "ANNREC_SERVICE_SETTINGS_JSON"


class ServiceSettings(BaseSettings):
    """Everything ``annrec serve`` can be told. Environment variables are ``ANNREC_<FIELD>`` (upper case).

    Security: at least one of ``read_key`` / ``admin_key`` is required unless ``insecure_no_auth`` is
    set. Clients send a key in the ``X-API-Key`` header (or ``Authorization: Bearer <key>``). The admin
    key also grants read access; with only a read key, the write and reload endpoints are disabled.
    """

    model_config = SettingsConfigDict(env_prefix="ANNREC_", extra="forbid", validate_default=True)

    model_dir: Path = Field(description="folder holding Embeddings and Index artifacts (searched two levels deep)")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 to listen on every interface)")
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes; each accepts writes and applies the "
                                                     "others' from the write-ahead log within reload_poll_s")
    read_key: SecretStr | None = Field(None, description="API key for the read endpoints")
    admin_key: SecretStr | None = Field(None, description="API key for writes and reload (grants reads too)")
    read_key_file: Path | None = Field(None, description="file holding the read key (first line): keeps the key out "
                                                         "of the command line and the environment")
    admin_key_file: Path | None = Field(None, description="file holding the admin key (first line)")
    # set by annrec serve for its worker processes: the keys' SHA-256 digests instead of the keys themselves
    read_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="(internal) digest of the "
                                                                                  "read key handed to workers")
    admin_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="(internal) digest of the "
                                                                                    "admin key handed to workers")
    insecure_no_auth: bool = Field(False, description="serve without any API key (never on a shared network)")
    metrics_public: bool = Field(False, description="serve /metrics without a key")
    allowed_hosts: list[str] | None = Field(None, description="Host header names the server answers to (400 for "
                                                              "others: DNS rebinding); default the bind address, "
                                                              "localhost, 127.0.0.1 and ::1, or any ('*') when "
                                                              "listening on every interface")
    cors_origins: list[str] = Field(default_factory=list, description="web origins (https://app.example) whose "
                                                                      "pages may call the API from a browser; "
                                                                      "none by default (cross-origin requests 403)")
    default_index: str | None = Field(None, description="index used by /v1/users/... and /v1/recommendations/next "
                                                        "and /v1/search/text when the request names none")
    # limits
    header_timeout_s: float = Field(10.0, gt=0.0, le=600.0, description="a connection whose request headers are "
                                                                      "not complete this many seconds after it "
                                                                      "opened (or after its last answer) is closed")
    max_connections: int | None = Field(None, ge=1, description="most open client connections; past it the oldest "
                                                                "idle ones are closed (default: the open-file "
                                                                "limit less 64)")
    timeout_keep_alive_s: float = Field(5.0, gt=0.0, le=600.0, description="an idle keep-alive connection is "
                                                                          "closed after this many seconds")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)")
    max_k: int = Field(1000, ge=1, description="largest k a request may ask for")
    max_batch: int = Field(256, ge=1, description="most query vectors (or upserted items) in one request")
    max_ids: int = Field(10_000, ge=1, description="most ids in an allow-list, deny-list or item sequence")
    max_string_length: int = Field(2000, ge=1, description="longest text query / string id accepted")
    max_metadata_bytes: int = Field(16 * 1024, ge=16, description="largest metadata object of one upserted item, "
                                                                 "as JSON bytes (422 above)")
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest answer (JSON bytes); a search "
                                                                          "whose hits would pass it is answered "
                                                                          "413 before it is serialised")
    max_ef: int = Field(4096, ge=1, description="largest ef / efSearch a request may ask for")
    max_nprobe: int = Field(65_536, ge=1, description="largest nprobe a request may ask for")
    # search execution
    search_threads: int = Field(1, ge=1, description="threads one request's search may use (1: concurrency comes "
                                                     "from parallel requests)")
    max_concurrent_searches: int = Field(default_factory=lambda: max(4, 2 * (os.cpu_count() or 2)), ge=1,
                                         description="searches run at once in the thread pool (default 2 per core, "
                                                     "at least 4: enough to overlap the Python and native parts "
                                                     "of requests without GIL contention)")
    search_batching: bool = Field(True, description="coalesce concurrent single-vector searches of one index into "
                                                    "one batch search (annrec.service.batching): one thread hand-off "
                                                    "per batch; no added wait when the server is idle")
    max_search_batch: int = Field(64, ge=1, le=4096, description="most searches in one dynamic batch")
    fast_search: bool = Field(True, description="answer POST /v1/indexes/{name}/search before routing and "
                                                "dependency injection, with the route's own checks, search and "
                                                "error handlers (annrec.service.fastpath)")
    # persistence of writes
    persist: Literal["sync", "async"] = Field(
        "sync", description="sync: a write is answered once its write-ahead-log commit is fsynced (concurrent "
                            "writes share one commit): it survives a power loss; async: answered once committed "
                            "without fsync (SQLite synchronous=NORMAL): it survives a crash of the server, a power "
                            "loss can lose the last writes")
    read_only: bool = Field(False, description="serve without accepting writes (a read replica); nothing is "
                                               "written to the model dir")
    shard_backend: Literal["local", "ray"] = Field("local", description="where the shards of a sharded index "
                                                                        "run: in the server's process, or in Ray "
                                                                        "actors (annrec serve --ray)")
    ray_address: str | None = Field(None, description="the Ray cluster to join with shard_backend ray ('auto', "
                                                      "'ray://host:10001', host:port); unset: a local Ray on "
                                                      "127.0.0.1")
    snapshot_every_writes: int = Field(10_000, ge=1, description="logged items after which a new snapshot of the "
                                                                 "index is written in the background")
    snapshot_interval_s: float = Field(60.0, gt=0.0, description="seconds after which a snapshot is written when "
                                                                 "anything was logged since the last one")
    serve_bare_embeddings: bool = Field(True, description="serve Embeddings no index was built from through an "
                                                          "exact in-memory FAISS Flat index")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False
    reload_poll_s: float = Field(0.5, gt=0.0, description="with workers > 1: how often a worker applies the writes "
                                                          "other workers logged and checks for a reload requested "
                                                          "through another worker")
    runtime_dir: Path | None = Field(None, description="folder the workers share (set by annrec serve)")

    @model_validator(mode="after")
    def _check_auth(self) -> ServiceSettings:
        for name in ("read", "admin"):
            file = getattr(self, f"{name}_key_file")
            if file is None:
                continue
            if getattr(self, f"{name}_key") is not None:
                raise ValueError(f"both {name}_key and {name}_key_file are given: give one")
            try:
                lines = Path(file).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ValueError(f"cannot read {name}_key_file {file}: {e.strerror or e}") from None
            key = lines[0].strip() if lines else ""
            if not key:
                raise ValueError(f"{name}_key_file {file} is empty: write the key on its first line")
            object.__setattr__(self, f"{name}_key", SecretStr(key))
        digests = [d for d in (self.read_key_sha256, self.admin_key_sha256) if d is not None]
        keys = [k for k in (self.read_key, self.admin_key) if k is not None]
        if self.insecure_no_auth and keys:
            raise ValueError("insecure_no_auth is set together with API keys: choose one (drop --insecure-no-auth "
                             "to require the keys)")
        if not self.insecure_no_auth and not keys and not digests:
            raise ValueError("no API key given: pass --read-key and/or --admin-key (or ANNREC_READ_KEY / "
                             "ANNREC_ADMIN_KEY), or --insecure-no-auth to serve without authentication")
        for k in keys:
            if len(k.get_secret_value()) < 8:
                raise ValueError("API keys must be at least 8 characters long: generate one with "
                                 "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`")
        if self.read_key is not None and self.admin_key is not None and \
                self.read_key.get_secret_value() == self.admin_key.get_secret_value():
            raise ValueError("the read key and the admin key are the same: use two different keys")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get() or {})

    def key_digest(self, name: str) -> str | None:
        """The SHA-256 hex digest of the ``"read"`` or ``"admin"`` key (what requests are compared against)."""
        key = getattr(self, f"{name}_key")
        if key is not None:
            import hashlib

            return hashlib.sha256(key.get_secret_value().encode()).hexdigest()
        return getattr(self, f"{name}_key_sha256")

    def to_env_json(self) -> str:
        """The settings as JSON for handing to worker processes: the keys only as SHA-256 digests (a worker
        compares the digest of a request's key), so no plain-text key reaches their environment."""
        d = self.model_dump(mode="json")
        for name in ("read", "admin"):
            d[f"{name}_key_sha256"] = self.key_digest(name)
            d[f"{name}_key"] = d[f"{name}_key_file"] = None
        return json.dumps(d)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML/JSON/TOML settings file into a dict.

    Raises:
        DataNotFoundError: no such file. InputError: unreadable, or not a mapping of settings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no config file at {path}: copy service/config.example.yaml and edit it")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise InputError(f"config file {path} must end in .yaml, .yml, .json or .toml")
    except InputError:
        raise
    except Exception as e:  # yaml/json/toml syntax errors
        raise InputError(f"config file {path} could not be parsed: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of settings (key: value), not {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_settings(config: str | os.PathLike | None = None, **overrides: Any) -> ServiceSettings:
    """Resolve the settings: ``overrides`` (flags; ``None`` = not given) > ``ANNREC_*`` env > config file > defaults.

    ``config`` defaults to ``$ANNREC_CONFIG``.

    Raises:
        InputError: a setting is invalid (the message names it), or the config file is unreadable.
        DataNotFoundError: the config file does not exist.
    """
    config = config or os.environ.get("ANNREC_CONFIG") or None
    file_values = read_config_file(config) if config else {}
    token = _FILE_VALUES.set(file_values)
    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise InputError("invalid service settings: " + format_validation_error(e)) from None
    finally:
        _FILE_VALUES.reset(token)


def settings_from_env() -> ServiceSettings:
    """Settings handed over by ``annrec serve`` (``$ANNREC_SERVICE_SETTINGS_JSON``), else resolved as usual."""
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        token = _FILE_VALUES.set({})
        try:
            return ServiceSettings(**json.loads(raw))
        finally:
            _FILE_VALUES.reset(token)
    return load_settings()


def format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
