"""``annrec serve``: the HTTP API over the artifacts of a model dir (uvicorn + FastAPI)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import typer

from annrec.cli.apps import app, console, err_console


def listen_socket(host: str, port: int, backlog: int):
    """Bind and listen on ``host:port`` before anything else starts, so a busy port is one clear error, not a log
    line, and no process started during start-up (a local Ray's agents pick random free ports) can take the port.

    Returns:
        socket.socket: a listening TCP socket (SO_REUSEADDR, as uvicorn sets it).

    Raises:
        InputError: the address is in use or cannot be bound (permission, unknown host).
    """
    import socket

    from annrec.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)  # listening at once: Linux lets a second SO_REUSEADDR socket bind a port not listened on
    except OSError as e:
        sock.close()
        hint = "choose another --port or stop the other server" if e.errno == 98 else "check --host and --port"
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}): {hint}") from None
    return sock


@app.command("serve")
def serve(
    model_dir: Path = typer.Option(None, "--model-dir", help="Folder holding Embeddings and Index artifacts "
                                                             "(e.g. the --out of `annrec quickstart`). "
                                                             "Env: ANNREC_MODEL_DIR."),
    host: str = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default 8000)."),
    workers: int = typer.Option(None, "--workers", help="Worker processes (default 1); each holds its own copy "
                                                        "of the indexes and accepts writes."),
    config: Path = typer.Option(None, "--config", help="YAML/JSON/TOML settings file (see "
                                                       "service/config.example.yaml). Env: ANNREC_CONFIG."),
    read_key: str = typer.Option(None, "--read-key", help="API key for reads (visible to local users in the process "
                                 "list: prefer --read-key-file or ANNREC_READ_KEY)."),
    read_key_file: Path = typer.Option(None, "--read-key-file", help="File whose first line is the read key."),
    admin_key_file: Path = typer.Option(None, "--admin-key-file", help="File whose first line is the admin key."),
    admin_key: str = typer.Option(None, "--admin-key", help="API key for writes and reload (reads too). "
                                                            "Env: ANNREC_ADMIN_KEY."),
    insecure_no_auth: bool = typer.Option(None, "--insecure-no-auth/--auth",
                                          help="Serve without API keys (loopback experiments only)."),
    persist: str = typer.Option(None, "--persist", help="sync (answer a write once its log commit is fsynced) or "
                                                        "async (committed without fsync) (default sync)."),
    log_level: str = typer.Option(None, "--log-level", help="critical, error, warning, info, debug."),
    read_only: bool = typer.Option(None, "--read-only/--writable", help="Refuse writes (a read replica). "
                                   "Env: ANNREC_READ_ONLY."),
    ray: bool = typer.Option(False, "--ray", help="Run the shards of sharded indexes in Ray actors (a local Ray "
                             "on 127.0.0.1 unless --ray-address); needs the ray extra."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster to join with --ray ('auto', "
                                    "'ray://HEAD:10001', HEAD:6379). Env: ANNREC_RAY_ADDRESS."),
    check: bool = typer.Option(False, "--check", help="Load the artifacts, print what would be served, and exit."),
) -> None:
    """Serve indexes and recommenders over HTTP (FastAPI + uvicorn). Settings: flags > ANNREC_* env > --config."""
    from annrec.service.registry import Registry, discover
    from annrec.service.settings import load_settings

    settings = load_settings(config, model_dir=model_dir, host=host, port=port, workers=workers, read_key=read_key,
                             admin_key=admin_key, read_key_file=read_key_file, admin_key_file=admin_key_file,
                             insecure_no_auth=insecure_no_auth, persist=persist,
                             log_level=log_level, read_only=read_only, ray_address=ray_address,
                             shard_backend="ray" if (ray or ray_address) else None)
    for flag, value in (("--read-key", read_key), ("--admin-key", admin_key)):
        if value:
            err_console.print(f"warning: {flag} puts the key on the command line, where every local user can read "
                              f"it (/proc/<pid>/cmdline, ps): use {flag}-file or the ANNREC_"
                              f"{flag[2:].upper().replace('-', '_')} variable", highlight=False)
    found = discover(settings.model_dir)  # clean errors before uvicorn starts
    if not found.indexes and not found.embeddings:
        from annrec.errors import DataNotFoundError

        raise DataNotFoundError(f"no index or embeddings artifacts under {settings.model_dir}: build some with "
                                f"`annrec quickstart --out {settings.model_dir}` or `annrec index build`")
    if check:
        snap = Registry(settings.model_copy(update={"read_only": True, "shard_backend": "local"})).load()
        for name, srv in sorted(snap.indexes.items()):
            d = srv.describe(full=False)
            console.print(f"{name}: {d['backend']} {d['metric']} dim={d['dim']} count={d['count']} "
                          f"trainer={d['trainer']} users={d['user_recommendations']} encoder={d['query_encoder']}")
        return
    if settings.insecure_no_auth:
        err_console.print("[bold yellow]WARNING:[/] serving WITHOUT authentication (--insecure-no-auth): anyone "
                          f"who can reach {settings.host}:{settings.port} can read"
                          + (", change and reload the indexes"), highlight=False)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.insecure_no_auth:
        err_console.print(f"[bold red]WARNING:[/] listening on {settings.host} without authentication",
                          highlight=False)
    run_server(settings, f"{len(found.indexes)} index(es), {len(found.embeddings)} embeddings")


def run_server(settings, what: str) -> None:
    """Listen (before the app starts: :func:`listen_socket`), hand the settings to the app through
    ``$ANNREC_SERVICE_SETTINGS_JSON`` (keys only as SHA-256 digests) and run uvicorn with ``settings.workers``
    processes, the guarded HTTP protocol (header timeout, connection cap) and uvloop where installed.

    Raises:
        InputError: the address cannot be bound. typer.Exit(3): the app failed to start (logged by uvicorn).
    """
    import uvicorn

    from annrec.service import connections
    from annrec.service.settings import SETTINGS_ENV

    connections.configure(settings.header_timeout_s, settings.max_connections)
    backlog = min(2048, connections.MAX_CONNECTIONS)  # the cap itself: GuardedHttpToolsProtocol
    sock = listen_socket(settings.host, settings.port, backlog)
    runtime = None
    try:
        if settings.workers > 1:
            runtime = tempfile.mkdtemp(prefix="annrec-serve-")
            settings = settings.model_copy(update={"runtime_dir": Path(runtime)})
        os.environ[SETTINGS_ENV] = settings.to_env_json()
        for name in ("ANNREC_READ_KEY", "ANNREC_ADMIN_KEY"):  # not inherited by the worker processes
            os.environ.pop(name, None)
        console.print(f"annrec serve: {what} under {settings.model_dir}; http://{settings.host}:{settings.port} "
                      f"(docs at /docs), {settings.workers} worker(s)", highlight=False)
        kwargs = {"http": connections.GuardedHttpToolsProtocol}
        if importlib.util.find_spec("uvloop") is not None:
            kwargs["loop"] = "uvloop"
        config = uvicorn.Config("annrec.service.app:app_from_env", factory=True, host=settings.host,
                                port=settings.port, workers=settings.workers, log_level=settings.log_level,
                                access_log=settings.access_log, timeout_graceful_shutdown=30,
                                timeout_keep_alive=settings.timeout_keep_alive_s, backlog=backlog, **kwargs)
        if settings.workers > 1:
            from uvicorn.supervisors import Multiprocess

            sock.set_inheritable(True)  # as uvicorn's own bind_socket() leaves it for its workers
            Multiprocess(config, sockets=[sock]).run()
        else:  # uvicorn starts the app (and a local Ray with it) before it binds: hand it the socket bound above
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            if not server.started:
                raise typer.Exit(3)  # uvicorn's STARTUP_FAILURE: the error is in its log above
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        os.environ.pop(SETTINGS_ENV, None)
        if runtime is not None:
            import shutil

            shutil.rmtree(runtime, ignore_errors=True)
