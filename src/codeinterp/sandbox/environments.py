"""Environments: named, versioned Python package sets an operator builds, on top of the default set.

    env = build(data_dir, "geo", "requirements.txt")            # DATA/environments/geo/1
    env = build(data_dir, "geo", "req.txt", no_index=True, find_links=["wheels/"])  # offline
    resolve(data_dir, "geo")  # the newest version;  resolve(data_dir, "geo@1")  that one
    list_all(data_dir)

A build runs the server's own pip (`python -m pip install --prefix`): what the server's
environment already has is not installed again, and every package of the server's environment
is a constraint, so an environment can add packages but never replace one the sessions (and the
kernel itself) rely on: such a requirement fails the build with pip's reason. Only wheels are
installed unless `allow_sdist` (building an sdist runs its code, as the operator). pip runs
`--isolated`: no pip configuration or PIP_* variable of the machine changes what is built.

Each build is made in a staging directory, made read-only and renamed into place as
`environments/NAME/N` (N counts up from 1 and is never reused), with:

    env.json    name, version, python, created_at, the requirements asked for, every package
                installed (name, version, whether it was asked for) and the top-level modules
    lock.txt    `name==version --hash=sha256:...` per package: `pip install --no-deps
                --require-hashes -r lock.txt` builds the same set again
    lib/python3.X/site-packages/ ...

A version is never changed after its rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from codeinterp.errors import Conflict, InvalidRequest, NotFound

DIRECTORY = "environments"
STAGING_PREFIX = ".staging-"
STALE_STAGE_SECONDS = 24 * 3600  # a build takes minutes; a day-old stage is a dead one's
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
REFERENCE = re.compile(r"^(?P<name>[a-z][a-z0-9_-]{0,62})(?:@(?P<version>[1-9][0-9]{0,8}))?$")
BUILD_TIMEOUT = 1800.0


class BuildFailed(InvalidRequest):
    """pip could not build the environment (its reason is in the message)."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    requested: bool


@dataclass(frozen=True)
class Environment:
    name: str
    version: int
    python: str  # "3.11": the only interpreter it can be used with
    created_at: int
    requirements: list[str]
    packages: list[Package]
    modules: list[str]  # its top-level import names
    root: str = field(default="", compare=False)  # where it is on disk

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def site_packages(self) -> str:
        return os.path.join(self.root, "lib", f"python{self.python}", "site-packages")

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("root")
        return body

    @classmethod
    def load(cls, root: str) -> Environment:
        with open(os.path.join(root, "env.json")) as f:
            body = json.load(f)
        body["packages"] = [Package(**p) for p in body["packages"]]
        return cls(**body, root=root)


def modules_of(site_packages: str) -> tuple[str, ...]:
    """The top-level modules of the environment whose site-packages this is (none if it is
    not one, or its env.json cannot be read)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(site_packages)))
    try:
        return tuple(Environment.load(root).modules)
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def base_directory(data_dir: str) -> str:
    return os.path.join(data_dir, DIRECTORY)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidRequest(
            f"{name!r} is not an environment name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter (at most 63 characters)"
        )
    return name


def build(
    data_dir: str,
    name: str,
    requirements_file: str,
    *,
    index_url: str | None = None,
    find_links: Sequence[str] = (),
    no_index: bool = False,
    allow_sdist: bool = False,
    python: str = sys.executable,
) -> Environment:
    """Build the next version of environment `name` from a requirements file (see the module
    docstring). BuildFailed with pip's reason if it cannot be built; nothing is left behind."""
    check_name(name)
    try:
        requirements = Path(requirements_file).read_text().splitlines()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {requirements_file}: {exc.strerror}") from None
    if not any(_is_requirement(line) for line in requirements):
        raise InvalidRequest(f"{requirements_file} names no package to install")
    base = base_directory(data_dir)
    os.makedirs(base, mode=0o755, exist_ok=True)
    sweep_stale_stages(base)
    stage = os.path.join(base, STAGING_PREFIX + secrets.token_hex(8))
    os.mkdir(stage, 0o755)
    try:
        installed = _pip_install(
            python, stage, requirements_file, index_url, find_links, no_index, allow_sdist
        )
        python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
        environment = Environment(
            name=name,
            version=0,
            python=python_version,
            created_at=int(time.time()),
            requirements=[r.strip() for r in requirements if _is_requirement(r)],
            packages=[p for p, _ in installed],
            modules=_top_level_modules(stage, python_version),
            root=stage,
        )
        _write_lock(stage, installed)
        return _publish(base, stage, environment)
    finally:
        if os.path.exists(stage):
            _remove_tree(stage)


def sweep_stale_stages(base: str, older_than: float = STALE_STAGE_SECONDS) -> list[str]:
    """Remove what builds that died (a crash, a kill) left in the staging area; a build still
    running is younger than `older_than` seconds. The names removed."""
    removed = []
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if not name.startswith(STAGING_PREFIX):
            continue
        with contextlib.suppress(FileNotFoundError):
            if time.time() - os.lstat(path).st_mtime > older_than:
                _remove_tree(path)
                removed.append(name)
    return removed


def resolve(data_dir: str, reference: str) -> Environment:
    """The environment `NAME` (its newest version) or `NAME@N`; NotFound if there is none."""
    match = REFERENCE.match(reference)
    if match is None:
        raise InvalidRequest(f"{reference!r} is not an environment: use NAME or NAME@VERSION")
    name = match["name"]
    versions = _versions(base_directory(data_dir), name)
    wanted = int(match["version"]) if match["version"] else (max(versions) if versions else 0)
    if wanted not in versions:
        known = ", ".join(f"{name}@{v}" for v in sorted(versions)) or "none"
        raise NotFound(f"No environment {reference!r} (versions of {name!r}: {known}).")
    return Environment.load(os.path.join(base_directory(data_dir), name, str(wanted)))


def for_session(data_dir: str, reference: str, param: str = "environment") -> Environment:
    """The environment a request names, for a session: `resolve`, with an unknown or malformed
    name as a bad request (`param`), not a missing object."""
    try:
        environment = resolve(data_dir, reference)
    except (NotFound, InvalidRequest) as exc:
        known = ", ".join(e.id for e in list_all(data_dir)) or "none (codeinterp env build)"
        raise InvalidRequest(f"{exc} Environments here: {known}.", param=param) from None
    here = "{}.{}".format(*sys.version_info[:2])
    if environment.python != here:
        raise InvalidRequest(
            f"Environment {environment.id} was built for Python {environment.python}; this "
            f"server runs {here}. Build it again here (codeinterp env build).",
            param=param,
        )
    return environment


def list_all(data_dir: str) -> list[Environment]:
    """Every version of every environment, by name then version."""
    base = base_directory(data_dir)
    if not os.path.isdir(base):
        return []
    found = []
    for name in sorted(os.listdir(base)):
        if NAME.match(name):
            for version in sorted(_versions(base, name)):
                found.append(Environment.load(os.path.join(base, name, str(version))))
    return found


def remove(data_dir: str, reference: str, users: Callable[[Environment], list[str]]) -> Environment:
    """Delete the version `NAME@N` (a version must be named); its number stays taken. Conflict,
    naming them, if `users(environment)` names any user of it."""
    if "@" not in reference:
        raise InvalidRequest(f"name the version to remove: {reference}@N")
    environment = resolve(data_dir, reference)
    if using := users(environment):
        shown = ", ".join(using[:10]) + (f" and {len(using) - 10} more" if len(using) > 10 else "")
        raise Conflict(
            f"{environment.id} is in use by {shown}: delete those (or let them expire) first"
        )
    directory = os.path.dirname(environment.root)
    trash = os.path.join(base_directory(data_dir), STAGING_PREFIX + secrets.token_hex(8))
    os.rename(environment.root, trash)  # gone for new sessions at once
    with open(os.path.join(directory, f"{environment.version}.removed"), "w"):
        pass
    _remove_tree(trash)
    return environment


# -- building ------------------------------------------------------------------------------------


def _pip_install(
    python: str,
    stage: str,
    requirements_file: str,
    index_url: str | None,
    find_links: Iterable[str],
    no_index: bool,
    allow_sdist: bool,
) -> list[tuple[Package, str]]:
    """Run pip into `stage`; each installed package with its lock line."""
    constraints = os.path.join(stage, ".constraints.txt")
    with open(constraints, "w") as f:
        f.writelines(f"{name}=={version}\n" for name, version in _installed_here())
    report = os.path.join(stage, ".report.json")
    command = [
        python, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
        "--no-warn-script-location", "--prefix", stage, "--report", report,
        "-c", constraints, "-r", requirements_file,
    ]  # fmt: skip
    if not allow_sdist:
        command += ["--only-binary", ":all:"]
    if no_index:
        command.append("--no-index")
    if index_url:
        command += ["--index-url", index_url]
    for link in find_links:
        command += ["--find-links", link]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"pip did not finish within {BUILD_TIMEOUT:g} s") from None
    if done.returncode != 0:
        reason = _pip_reason(done.stderr)
        if "ResolutionImpossible" in reason:
            reason += (
                " An environment adds packages to the default set: it cannot replace a package "
                "the default set has (each is pinned to its version here) or need a version of "
                "one that conflicts with it."
            )
        raise BuildFailed(f"pip could not build the environment: {reason}")
    with open(report) as f:
        installs = json.load(f).get("install", [])
    os.unlink(report)
    os.unlink(constraints)
    if not installs:
        raise BuildFailed(
            "nothing to install: every requirement is already in the default package set"
        )
    return [_package_and_lock_line(item) for item in installs]


def _installed_here() -> list[tuple[str, str]]:
    """Every distribution of the server's environment (what an environment may not replace)."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            seen.setdefault(_normalize(name), dist.version)
    return sorted(seen.items())


def _package_and_lock_line(item: dict[str, Any]) -> tuple[Package, str]:
    meta = item["metadata"]
    package = Package(meta["name"], meta["version"], bool(item.get("requested")))
    line = f"{_normalize(package.name)}=={package.version}"
    digest = (item.get("download_info", {}).get("archive_info", {}).get("hashes") or {}).get(
        "sha256"
    )
    if digest:
        line += f" --hash=sha256:{digest}"
    return package, line


def _write_lock(stage: str, installed: list[tuple[Package, str]]) -> None:
    with open(os.path.join(stage, "lock.txt"), "w") as f:
        f.write("# what the build resolved: pip install --no-deps --require-hashes -r lock.txt\n")
        f.writelines(line + "\n" for _, line in sorted(installed, key=lambda i: i[1]))


def _top_level_modules(stage: str, python_version: str) -> list[str]:
    site = os.path.join(stage, "lib", f"python{python_version}", "site-packages")
    modules = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(site):
            if entry.endswith((".dist-info", ".egg-info", ".pth")) or entry.startswith(("_", ".")):
                continue
            stem = entry.split(".")[0] if entry.endswith(".py") or "." in entry else entry
            if stem.isidentifier() and stem not in ("tests", "test"):
                modules.add(stem)
    return sorted(modules)


def _publish(base: str, stage: str, environment: Environment) -> Environment:
    """Write env.json, make the tree read-only and rename it to the next free NAME/N."""
    directory = os.path.join(base, environment.name)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    while True:
        version = max(_versions(base, environment.name, include_removed=True), default=0) + 1
        published = replace(environment, version=version, root="")
        with open(os.path.join(stage, "env.json"), "w") as f:
            json.dump(published.to_json(), f, indent=2)
            f.write("\n")
        _make_read_only(stage)
        final = os.path.join(directory, str(version))
        try:
            os.rename(stage, final)  # fails if another build took this number meanwhile
        except OSError:
            _make_writable(stage)
            continue
        return Environment.load(final)


# -- helpers -------------------------------------------------------------------------------------


def _versions(base: str, name: str, *, include_removed: bool = False) -> set[int]:
    """The versions of `name` on disk (a removed one keeps its number taken)."""
    try:
        entries = os.listdir(os.path.join(base, name))
    except FileNotFoundError:
        return set()
    found = set()
    for entry in entries:
        number, _, suffix = entry.partition(".")
        if number.isdigit() and (suffix == "" or (include_removed and suffix == "removed")):
            found.add(int(number))
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_requirement(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _pip_reason(stderr: str) -> str:
    """pip's own words on one line: its ERROR lines (else its last line), without the noise."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return " ".join(errors or lines[-1:]) or "pip failed and said nothing"


def _make_read_only(root: str) -> None:
    for directory, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(
                    path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
                )
        for name in dirs:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555)
    os.chmod(root, 0o555)


def _make_writable(root: str) -> None:
    for directory, dirs, _ in os.walk(root):
        os.chmod(directory, 0o755)
        for name in dirs:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)


def _remove_tree(root: str) -> None:
    _make_writable(root)
    shutil.rmtree(root, ignore_errors=True)
