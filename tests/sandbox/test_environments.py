"""Sessions with an environment's packages: importable on top of the default set, read-only,
in subprocesses too, through the task door, and invisible to sessions without it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox import Sandbox, SandboxConfig, SandboxPolicy, environments
from codeinterp.sandbox.environments import Environment
from tests.support.wheels import make_demo_wheels

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    """demo@1: ci_demo (needs ci_helper), built offline from wheels made here. Under /tmp, as
    a CI checkout's data directory is: a task's own /tmp must not hide it."""
    base = tmp_path_factory.mktemp("environments")
    wheels = make_demo_wheels(base / "wheels")
    requirements = base / "requirements.txt"
    requirements.write_text("ci_demo\n")
    return environments.build(
        str(base / "data"), "demo", str(requirements), no_index=True, find_links=[str(wheels)]
    )


async def test_a_session_imports_the_environment_read_only(environment: Environment) -> None:
    policy = SandboxPolicy().with_packages(environment.site_packages)
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        session = await sandbox.create_session(policy)
        code = (
            "import ci_demo, numpy, subprocess, sys\n"
            "print(ci_demo.VALUE, numpy.__name__)\n"
            "print(subprocess.run([sys.executable, '-c', 'import ci_demo; print(ci_demo.VALUE)'],"
            " capture_output=True, text=True).stdout.strip())\n"
            "import os\n"
            f"print(bool(os.statvfs({environment.site_packages!r}).f_flag & os.ST_RDONLY))\n"
        )
        execution = await session.run(code)
        assert execution.stdout.splitlines() == ["42 numpy", "42", "True"], execution
        await session.close()

        plain = await sandbox.create_session()
        missing = await plain.run("import ci_demo")
        assert missing.status == "error" and "ModuleNotFoundError" in str(missing.error)
        await plain.close()


async def test_a_task_sees_the_environment(environment: Environment) -> None:
    policy = SandboxPolicy().with_packages(environment.site_packages)
    assert environment.root.startswith("/tmp/")  # covered by each task's own /tmp
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        result = await sandbox.run_task("import ci_demo; print(ci_demo.VALUE)", policy)
        assert result.status == "ok" and result.stdout == "42\n", result
        again = await sandbox.run_task("import ci_demo; print(ci_demo.VALUE + 1)", policy)
        assert again.stdout == "43\n", again  # the same jail, used again


async def test_packages_that_are_not_there_fail_the_session_clearly(tmp_path: Path) -> None:
    policy = SandboxPolicy().with_packages(str(tmp_path / "gone"))
    async with await Sandbox.start(SandboxConfig(pool_size=0)) as sandbox:
        with pytest.raises(Exception, match="gone"):
            await sandbox.create_session(policy)


async def test_an_environment_has_a_zygote_with_its_modules_and_a_warm_pool(
    environment: Environment,
) -> None:
    """The first session of an environment starts its zygote, which has imported its modules;
    the sessions after it come from a pool of their own, as the default ones do."""
    policy = SandboxPolicy().with_packages(environment.site_packages)
    config = SandboxConfig(pool_size=1, env_pool_size=1, environment_zygotes=1)
    async with await Sandbox.start(config) as sandbox:
        first = await sandbox.create_session(policy)
        preloaded = await first.run("import sys\nprint('ci_demo' in sys.modules)")
        assert preloaded.stdout == "True\n", preloaded
        default = await sandbox.create_session()
        plain = await default.run("import sys\nprint('ci_demo' in sys.modules)")
        assert plain.stdout == "False\n", plain  # the main zygote never imported it
        for _ in range(200):
            if sandbox.warm_sessions == 2:  # the default pool's and the environment's
                break
            await asyncio.sleep(0.05)
        assert sandbox.warm_sessions == 2
        second = await sandbox.create_session(policy)
        assert sandbox.warm_sessions == 1  # it came from the environment's pool
        assert (await second.run("import ci_demo\nprint(ci_demo.VALUE)")).stdout == "42\n"
        assert sandbox.describe()["environment_zygotes"] == 1
        # Another policy of the same environment: the same zygote, and no pool of its own (no
        # room for one: environment_zygotes=1).
        other = SandboxPolicy().with_packages(environment.site_packages).with_limits(cpus=0.5)
        third = await sandbox.create_session(other)
        assert (await third.run("import sys\nprint('ci_demo' in sys.modules)")).stdout == "True\n"
        await asyncio.sleep(0.5)
        assert sandbox.warm_sessions == 2 and sandbox.describe()["environment_zygotes"] == 1
        for session in (first, default, second, third):
            await session.close()


def test_an_environment_built_for_another_python_is_refused_clearly(
    environment: Environment, tmp_path: Path
) -> None:
    body = json.loads(Path(environment.root, "env.json").read_text())
    body.update(name="old", python="3.10")
    root = tmp_path / "environments" / "old" / "1"
    root.mkdir(parents=True)
    (root / "env.json").write_text(json.dumps(body))
    with pytest.raises(InvalidRequest, match=r"built for Python 3\.10; this server runs 3\."):
        environments.for_session(str(tmp_path), "old")


def test_a_dead_build_s_stage_is_swept_and_a_live_one_is_kept(tmp_path: Path) -> None:
    base = tmp_path / "environments"
    dead, live = base / ".staging-dead", base / ".staging-live"
    for stage in (dead, live):
        (stage / "lib").mkdir(parents=True)
        (stage / "lib" / "x.py").write_text("")
    os.utime(dead, (0, 0))
    assert environments.sweep_stale_stages(str(base)) == [".staging-dead"]
    assert not dead.exists() and live.exists()
