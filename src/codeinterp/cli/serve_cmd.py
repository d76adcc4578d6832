"""`codeinterp serve`: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import sys
from typing import Any

from codeinterp.config import Settings, key_fingerprint
from codeinterp.errors import InvalidRequest
from codeinterp.telemetry import logs


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the OpenAI-compatible server (Files, Assistants v2, code_interpreter)",
        description="Run the OpenAI-compatible server. Every setting can also come from a "
        "CODEINTERP_* environment variable (flags win).",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--data-dir", help="where the database and files live")
    parser.add_argument("--upstream-base-url", help="the model's OpenAI-compatible endpoint")
    parser.add_argument("--pool-size", type=int, help="ready sandbox sessions kept warm")
    parser.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        default=None,
        help="run code with NO isolation (only for trusted code where the sandbox cannot work)",
    )
    parser.add_argument(
        "--seccomp-profile",
        choices=["deny", "allow"],
        help="sessions' seccomp profile: the deny-list (default) or the derived allow-list",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text (default) or one JSON object per line (CODEINTERP_LOG_FORMAT)",
    )
    parser.set_defaults(run=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "upstream_base_url": args.upstream_base_url,
        "pool_size": args.pool_size,
        "unsafe_no_sandbox": args.unsafe_no_sandbox,
        "seccomp_profile": args.seccomp_profile,
        "log_format": args.log_format,
    }
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        raise InvalidRequest(f"invalid settings: {exc}") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from codeinterp.api.app import create_app

    settings = settings_from(args)
    if not settings.key_projects() and not _is_loopback(settings.host):
        raise InvalidRequest(
            f"refusing to listen on {settings.host} without API keys: set CODEINTERP_API_KEYS "
            "(comma-separated keys) or listen on 127.0.0.1"
        )
    logs.configure(args.log_level, settings.log_format)
    if not settings.key_projects():
        print(
            f"codeinterp: no API keys configured (CODEINTERP_API_KEYS): accepting any key, "
            f"listening on {settings.host} only",
            file=sys.stderr,
        )
    for entry in settings.key_entries():
        how = "configured" if entry.named else "its own, derived from the whole key"
        print(
            f"codeinterp: API key {key_fingerprint(entry.key)} -> project {entry.project} ({how})",
            file=sys.stderr,
        )
    print(
        f"codeinterp: serving on http://{settings.host}:{settings.port}/v1, model endpoint "
        f"{settings.upstream_base_url}, data in {settings.data_dir}",
        file=sys.stderr,
    )
    if settings.trace_store:
        print(f"codeinterp: traces at http://{settings.host}:{settings.port}/ui", file=sys.stderr)
    app = create_app(settings)

    class DrainingServer(uvicorn.Server):
        """On SIGTERM or SIGINT, besides uvicorn's own stop (no new connections, then waiting
        for the requests in flight): requests still queued for a session are answered at once
        with a 503, so only work already running is waited for."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            drain = getattr(app.state, "drain", None)  # set once the server has started
            if drain is not None:
                with contextlib.suppress(RuntimeError):  # no loop running: nothing queued
                    asyncio.get_running_loop().call_soon_threadsafe(drain)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        log_config=None,  # uvicorn's own lines go through ours (text or JSON)
        access_log=False,  # each request is one line of ours (telemetry/logs.py), with its ids
        lifespan="on",
        loop="uvloop",  # faster than asyncio's loop and h11 (dependencies of this package)
        http="httptools",
        # Bounded: a request still running then (a long execution, a stream) is cut off.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    DrainingServer(config).run(sockets=[listening_socket(settings.host, settings.port)])
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, with TCP_NODELAY (inherited by every accepted connection): without
    it each streamed event can wait ~40 ms for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidRequest(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock
