"""The app factory and its lifespan, which owns the store, the sandbox and the run machinery,
and closes them in reverse order."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from codeinterp import __version__
from codeinterp.agent.bus import EventBus
from codeinterp.agent.manager import RunManager
from codeinterp.agent.runner import AgentDeps
from codeinterp.agent.upstream import Upstream
from codeinterp.config import Settings, key_fingerprint
from codeinterp.egress import EgressProxy, EgressSettings, default_mitmdump
from codeinterp.sandbox import Sandbox, SandboxConfig
from codeinterp.services.assistants import AssistantsService
from codeinterp.services.chat import ChatService
from codeinterp.services.containers import ContainersService
from codeinterp.services.environments import EnvironmentsService
from codeinterp.services.executions import ExecutionsService
from codeinterp.services.files import FilesService
from codeinterp.services.models import ModelsService
from codeinterp.services.responses import ResponsesService
from codeinterp.services.runs import RunsService
from codeinterp.services.threads import ThreadsService
from codeinterp.services.traces import TracesService
from codeinterp.services.usage import UsageService
from codeinterp.sessions import Persistence, SessionLimits, SessionManager
from codeinterp.store import Store
from codeinterp.store.store import ORPHAN_GRACE_SECONDS
from codeinterp.telemetry import metrics, tracing
from codeinterp.telemetry.recorder import TraceRecorder

from . import errors
from .deps import Services
from .mcp_route import add_mcp
from .middleware import (
    BodySizeLimitMiddleware,
    JsonDepthMiddleware,
    RequestIdMiddleware,
    TraceContextMiddleware,
)
from .routes import (
    assistants,
    chat,
    containers,
    environments,
    executions,
    files,
    models,
    responses,
    runs,
    threads,
    ui,
    usage,
)
from .routes import metrics as metrics_route

log = logging.getLogger("codeinterp.api")

RESTART_MESSAGE = "The server restarted while this run was in progress."
JSON_BODY_LIMIT = 32 * 1024 * 1024
SHUTTING_DOWN = "The server is shutting down: try again when it is back."
# arrays and objects in a request body nest at most this deep (deeper: 400 before any parsing)
MAX_JSON_DEPTH = 128


async def _sweep_blobs_periodically(store: Store) -> None:
    while True:
        await asyncio.sleep(ORPHAN_GRACE_SECONDS)
        try:
            await store.sweep_blobs()
        except Exception:
            log.exception("could not sweep orphan blobs")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recorder = TraceRecorder() if settings.trace_store else None
        tracer_provider = tracing.configure(
            settings.trace_content, settings.trace_content_max_chars, recorder
        )
        store = await Store.open(settings.data_dir, settings.database)
        failed = await store.fail_interrupted_runs(RESTART_MESSAGE, int(time.time()))
        if failed:
            log.warning(
                "marked %d run(s) failed: they were in flight at the last shutdown", len(failed)
            )
        await store.end_open_sessions(int(time.time()))
        await _note_earlier_projects(store, settings)
        if not settings.session_persistence:  # states saved while it was on are not woken
            await store.discard_session_states(
                [state.owner_id for state in await store.list_session_states()]
            )
        expired = await store.expire_running_containers()
        if expired:
            log.warning(
                "marked %d container(s) expired: their sessions ended with the server", expired
            )
        sandbox = await Sandbox.start(
            SandboxConfig(
                pool_size=settings.pool_size,
                environment_zygotes=settings.environment_zygotes,
                env_pool_size=settings.env_pool_size,
                unsafe_no_sandbox=settings.unsafe_no_sandbox,
                seccomp_profile=settings.seccomp_profile,
            )
        )
        upstream = Upstream(
            settings.upstream_base_url,
            settings.upstream_api_key,
            settings.model_map,
            settings.upstream_timeout,
        )
        egress = EgressProxy(
            EgressSettings(
                mitmdump=settings.egress_mitmdump or default_mitmdump(),
                confdir=os.path.join(settings.data_dir, "egress"),
                resolve=settings.egress_resolve,
                allow_private=settings.egress_allow_private,
                upstream_ca=settings.egress_upstream_ca,
                memory_limit=settings.egress_memory_mib * 2**20,
            ),
            cgroups=sandbox.cgroups,
        )
        sessions = SessionManager(
            sandbox,
            store,
            settings.session_idle_minutes * 60,
            settings.session_price_usd,
            SessionLimits(
                max_sessions=settings.max_sessions,
                max_sessions_per_project=settings.max_sessions_per_project,
                create_concurrency=settings.create_concurrency,
                queue_wait_seconds=settings.queue_wait_seconds,
                min_free_memory_bytes=settings.min_free_memory_mib * 2**20,
            ),
            Persistence(
                enabled=settings.session_persistence,
                checkpoint_seconds=settings.checkpoint_seconds,
                retention_seconds=settings.snapshot_retention_hours * 3600,
                quota_bytes=None
                if settings.snapshot_quota_mib_per_project is None
                else settings.snapshot_quota_mib_per_project * 2**20,
                stop_seconds=settings.stop_snapshot_seconds,
            ),
            egress,
        )
        sessions.start()
        stop_watching = metrics.watch_sessions(
            lambda: {**sessions.counts(), "warm": sandbox.warm_sessions}
        )
        blob_sweeper = asyncio.create_task(_sweep_blobs_periodically(store))
        traces = None
        if recorder is not None:
            traces = TracesService(store, recorder, settings.trace_retention_hours)
            traces.start()
        bus = EventBus()
        file_service = FilesService(store, settings.max_upload_bytes)
        run_manager = RunManager(AgentDeps(store, bus, sessions, file_service, upstream, settings))
        assistant_service = AssistantsService(store, settings.data_dir)

        async def thread_deleted(project: str, thread_id: str) -> None:
            await sessions.close(project, "thread", thread_id)

        thread_service = ThreadsService(store, on_thread_deleted=thread_deleted)
        container_service = ContainersService(store, sessions, settings)
        execution_service = ExecutionsService(sandbox, store, settings)
        app.state.sandbox = sandbox

        def drain() -> None:
            sessions.drain(SHUTTING_DOWN)
            execution_service.drain(SHUTTING_DOWN)

        app.state.drain = drain
        app.state.bus = bus
        app.state.key_projects = settings.key_projects()
        app.state.services = Services(
            settings=settings,
            files=file_service,
            assistants=assistant_service,
            threads=thread_service,
            runs=RunsService(
                store, assistant_service, thread_service, run_manager, settings.run_expiry_seconds
            ),
            usage=UsageService(store),
            containers=container_service,
            executions=execution_service,
            environments=EnvironmentsService(settings.data_dir),
            responses=ResponsesService(store, container_service, upstream, settings),
            chat=ChatService(container_service, upstream, settings),
            models=ModelsService(upstream),
            traces=traces,
        )
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            blob_sweeper.cancel()
            await run_manager.shutdown()
            await execution_service.stop()
            await sessions.close_all()
            await egress.close()
            await sandbox.close()
            await upstream.close()
            if traces is not None:
                await traces.stop()  # the traces of the runs just stopped are kept too
            await store.close()
            stop_watching()
            if tracer_provider is not None:
                tracer_provider.shutdown()  # sends the spans still queued

    # FastAPI's own spans (a trace per HTTP request, four spans each) are off: our traces are
    # per run, response, chat and execution, and those spans cost ~0.5 ms a request.
    telemetry: TelemetryConfig = {
        "tracing": False, "metrics": False, "logs": False, "operation_spans": False,
    }  # fmt: skip
    app = FastAPI(title="codeinterp", version=__version__, lifespan=lifespan, telemetry=telemetry)
    app.state.settings = settings
    errors.install(app)
    # runs before threads: POST /v1/threads/runs must not match /v1/threads/{thread_id}
    routes = (
        files,
        assistants,
        runs,
        threads,
        usage,
        containers,
        executions,
        environments,
        responses,
        chat,
        models,
    )
    for module in (*routes, metrics_route, ui):
        app.include_router(module.router)
    mcp = add_mcp(app, settings)
    app.add_middleware(JsonDepthMiddleware, max_depth=MAX_JSON_DEPTH)  # inside the size cap
    app.add_middleware(
        BodySizeLimitMiddleware,
        json_limit=JSON_BODY_LIMIT,
        upload_cap=settings.max_upload_bytes,
        upload_overhead=1024 * 1024,
    )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(TraceContextMiddleware)
    return app


async def _note_earlier_projects(store: Store, settings: Settings) -> None:
    """Objects made by earlier versions with a key configured without a project are in the
    project `proj_` + the key's last six characters (which two keys could share). They are kept
    there; say how to reach them again, without printing any part of the key."""
    for entry in settings.key_entries():
        if entry.named:
            continue
        earlier = f"proj_{entry.key[-6:]}"
        found = bool((await store.list_files(earlier, limit=1)).items)
        for kind in ("assistant", "thread", "container", "response"):
            found = found or bool((await store.list_objects(kind, earlier, limit=1)).items)
        if found:
            log.warning(
                "API key %s: objects made with it by an earlier version are kept in the "
                "project 'proj_' + the key's last six characters, which this key no longer "
                "reaches (keys without a project now get one of their own); to keep using "
                "them, configure the key as KEY:proj_<its last six characters>",
                key_fingerprint(entry.key),
            )
