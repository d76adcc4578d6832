"""`codeinterp env`: build and list environments (named package sets on top of the default set).

codeinterp env build geo -r requirements.txt [--index-url URL] [--find-links DIR] [--no-index]
codeinterp env list [--json]
codeinterp env show geo[@N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from codeinterp.config import Settings
from codeinterp.sandbox import environments
from codeinterp.sandbox.environments import Environment
from codeinterp.store import Store


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("env", help="build and list package environments")
    parser.add_argument(
        "--data-dir", help="where environments are kept (default: the server's data directory)"
    )
    actions = parser.add_subparsers(dest="env_command", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="build the next version of an environment")
    build.add_argument("name", help="lowercase letters, digits, '-' and '_'")
    build.add_argument("-r", "--requirements", required=True, help="a requirements file")
    build.add_argument("--index-url", help="the package index (default: pip's)")
    build.add_argument("--find-links", action="append", default=[], help="a directory of wheels")
    build.add_argument("--no-index", action="store_true", help="only --find-links, no index")
    build.add_argument(
        "--allow-sdist",
        action="store_true",
        help="also build source distributions (runs their build code; default: wheels only)",
    )
    build.set_defaults(run=run_build)

    listing = actions.add_parser("list", help="every environment and version")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(run=run_list)

    remove = actions.add_parser(
        "rm", help="remove one version, unless a container or a saved session uses it"
    )
    remove.add_argument("reference", help="NAME@VERSION")
    remove.set_defaults(run=run_remove)

    show = actions.add_parser("show", help="one environment: its packages and modules")
    show.add_argument("reference", help="NAME (its newest version) or NAME@VERSION")
    show.add_argument("--json", action="store_true", help="as JSON")
    show.set_defaults(run=run_show)


def run_remove(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    removed = environments.remove(
        data_dir, args.reference, lambda environment: asyncio.run(_users(data_dir, environment))
    )
    print(f"removed {removed.id}")
    return 0


async def _users(data_dir: str, environment: Environment) -> list[str]:
    """Who uses the environment, as the server's database says (a store on the data dir)."""
    settings = Settings(data_dir=data_dir)
    store = await Store.open(settings.data_dir, settings.database)
    try:
        return await store.environment_users(environment.id, environment.site_packages)
    finally:
        await store.close()


def _data_dir(args: argparse.Namespace) -> str:
    return args.data_dir or Settings().data_dir


def run_build(args: argparse.Namespace) -> int:
    print(f"building {args.name} from {args.requirements} ...", file=sys.stderr)
    environment = environments.build(
        _data_dir(args),
        args.name,
        args.requirements,
        index_url=args.index_url,
        find_links=args.find_links,
        no_index=args.no_index,
        allow_sdist=args.allow_sdist,
    )
    print(f"built {environment.id}: {_summary(environment)}")
    print(f"  {environment.root}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    found = environments.list_all(_data_dir(args))
    if args.json:
        print(json.dumps([e.to_json() | {"id": e.id} for e in found], indent=2))
        return 0
    if not found:
        print("no environments (build one with: codeinterp env build NAME -r requirements.txt)")
    for environment in found:
        print(f"{environment.id:<24} {_summary(environment)}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    environment = environments.resolve(_data_dir(args), args.reference)
    if args.json:
        print(json.dumps(environment.to_json() | {"id": environment.id}, indent=2))
        return 0
    print(f"{environment.id}  (Python {environment.python}, {environment.root})")
    print("asked for:  " + ", ".join(environment.requirements))
    print("modules:    " + ", ".join(environment.modules))
    for package in environment.packages:
        mark = "" if package.requested else "  (dependency)"
        print(f"  {package.name}=={package.version}{mark}")
    return 0


def _summary(environment: Environment) -> str:
    packages = ", ".join(f"{p.name}=={p.version}" for p in environment.packages)
    return f"{len(environment.packages)} package(s): {packages}"
