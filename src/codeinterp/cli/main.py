"""`codeinterp`: entry point and argument parsing; each command lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from codeinterp import __version__
from codeinterp.errors import CodeInterpError

from . import doctor_cmd, env_cmd, exec_cmd, mcp_cmd, serve_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeinterp", description="The open, self-hosted Code Interpreter."
    )
    parser.add_argument("--version", action="version", version=f"codeinterp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.add_parser(commands)
    exec_cmd.add_parser(commands)
    doctor_cmd.add_parser(commands)
    mcp_cmd.add_parser(commands)
    env_cmd.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CodeInterpError as exc:
        print(f"codeinterp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
