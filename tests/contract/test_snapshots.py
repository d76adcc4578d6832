"""Container snapshots through the HTTP API, with the official `openai` SDK: save a container's
state as a File (purpose "snapshot", an extension), start containers from it (a fork), move it
to another server through the Files API, and refuse what is not a snapshot.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from codeinterp import AsyncClient
from tests.contract.helpers import server_env
from tests.contract.test_containers import execute
from tests.support.server import ServerProcess
from tests.support.upstream import ScriptedUpstream

STATE = (
    "import pandas as pd\n"
    "frame = pd.DataFrame({'n': range(100)})\n"
    "def twice(x):\n"
    "    return 2 * x\n"
    "handle = open('/mnt/data/notes.txt', 'w')\n"
    "handle.write('kept'); handle.flush()\n"
)
CHECK = (
    "import json\n"
    "print(json.dumps({'sum': int(frame.n.sum()), 'twice': twice(21),"
    " 'notes': open('/mnt/data/notes.txt').read(), 'handle': 'handle' in globals()}))"
)


def snapshot(client: openai.OpenAI, container_id: str) -> dict[str, Any]:
    body = client.post(f"/containers/{container_id}/snapshots", cast_to=object)
    assert isinstance(body, dict), body
    return body


def from_snapshot(client: openai.OpenAI, snapshot_id: str) -> str:
    made = client.containers.create(
        name=f"from-{uuid.uuid4().hex[:8]}", extra_body={"snapshot_id": snapshot_id}
    )
    return made.id


def test_a_container_forks_from_its_snapshot(client: openai.OpenAI) -> None:
    original = client.containers.create(name="original").id
    assert execute(client, original, STATE)["status"] == "ok"
    saved = snapshot(client, original)
    assert saved["object"] == "file" and saved["purpose"] == "snapshot", saved
    assert saved["container_id"] == original and saved["bytes"] > 0
    assert set(saved["skipped"]) == {"handle"}, saved["skipped"]
    # The snapshot is a File like any other: listed by purpose, its bytes downloadable.
    listed = [f.id for f in client.files.list(purpose="snapshot")]
    assert saved["id"] in listed
    assert client.files.retrieve(saved["id"]).purpose == "snapshot"

    left, right = from_snapshot(client, saved["id"]), from_snapshot(client, saved["id"])
    first = execute(client, left, CHECK)
    assert first["status"] == "ok", first
    assert json.loads(first["stdout"]) == {
        "sum": 4950,
        "twice": 42,
        "notes": "kept",
        "handle": False,
    }
    assert "handle" in first["message"]  # what did not come back, said once
    assert execute(client, left, "1")["message"] == ""
    # The copies are independent of each other and of the original.
    execute(client, left, "frame = None\nopen('/mnt/data/notes.txt', 'w').write('left')")
    second = execute(client, right, CHECK)
    assert json.loads(second["stdout"])["sum"] == 4950
    assert json.loads(second["stdout"])["notes"] == "kept"
    assert execute(client, original, "print(frame.n.sum())")["stdout"] == "4950\n"
    for container in (original, left, right):
        client.containers.delete(container)


def test_what_is_not_a_snapshot_is_refused(client: openai.OpenAI, tmp_path: Path) -> None:
    plain = client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    with pytest.raises(openai.BadRequestError, match="is not a snapshot"):
        from_snapshot(client, plain.id)
    with pytest.raises(openai.NotFoundError):
        from_snapshot(client, "file-doesnotexist")
    missing = f"cntr_{uuid.uuid4().hex}"
    with pytest.raises(openai.NotFoundError):
        client.post(f"/containers/{missing}/snapshots", cast_to=object)


def test_a_hostile_upload_is_confined_to_its_container(client: openai.OpenAI) -> None:
    """An uploaded archive with a path out of the workspace: the container starts, refuses
    that member and says so in its first execution; the server's files are untouched."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in (("data/../../../../etc/codeinterp-pwned", b"x"), ("data/ok", b"ok")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    upload = client.files.create(file=("evil.snapshot", out.getvalue()), purpose="snapshot")  # type: ignore[arg-type]
    container = from_snapshot(client, upload.id)
    body = execute(client, container, "import os\nprint(sorted(os.listdir('/mnt/data')))")
    assert body["stdout"] == "['ok']\n", body
    assert "could not be restored" in body["message"] and "pwned" in body["message"]
    assert not Path("/etc/codeinterp-pwned").exists()
    client.containers.delete(container)


@pytest.fixture
def second_server(upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(server_env(upstream, pool_size=0), data_dir=tmp_path / "other") as other:
        yield other


def test_a_snapshot_moves_to_another_server(
    client: openai.OpenAI, second_server: ServerProcess
) -> None:
    source = client.containers.create(name="exported").id
    assert execute(client, source, STATE)["status"] == "ok"
    saved = snapshot(client, source)
    archive = client.files.content(saved["id"]).read()
    with second_server.client() as other:
        imported = other.files.create(file=("state.snapshot", archive), purpose="snapshot")  # type: ignore[arg-type]
        target = from_snapshot(other, imported.id)
        body = execute(other, target, CHECK)
        assert json.loads(body["stdout"])["twice"] == 42, body
        other.containers.delete(target)
    client.containers.delete(source)


async def test_the_async_python_client_saves_and_restores(server: ServerProcess) -> None:
    async with AsyncClient(server.base_url) as client:
        async with client.container() as box:
            await box.run("total = sum(range(10))")
            saved = await box.snapshot()
        archive = io.BytesIO()
        assert await client.download_snapshot(saved["id"], archive) == saved["bytes"]
        uploaded = await client.upload_snapshot(archive.getvalue())
        assert uploaded["purpose"] == "snapshot"
        async with client.container(snapshot_id=uploaded["id"]) as copy:
            assert (await copy.run("print(total)")).stdout == "45\n"
        for file_id in (saved["id"], uploaded["id"]):
            await client.delete_file(file_id)
