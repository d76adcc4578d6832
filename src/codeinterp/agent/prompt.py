"""The Chat Completions request for one run: instructions, the sandbox note, the thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SANDBOX_NOTE = """\
You can run Python with the `python` tool. It runs in a stateful sandbox: variables and files \
persist between calls in this conversation. Files live in /mnt/data. {network} numpy, pandas, \
matplotlib, scipy, scikit-learn, seaborn, sympy, Pillow, openpyxl and pypdf are available. \
Charts you draw with matplotlib are shown to the user. To give the user a file, save it in \
/mnt/data and link it as sandbox:/mnt/data/<name>."""
NO_NETWORK_NOTE = "The sandbox has no internet access, so packages cannot be installed;"
NETWORK_NOTE = (
    "The sandbox can reach only these domains, over HTTP and HTTPS through a proxy that is "
    "already set up (requests, urllib, httpx and pip use it): {domains}. Names cannot be "
    "resolved and nothing else is reachable;"
)


def sandbox_note(allowed_domains: Sequence[str] = ()) -> str:
    """What the model is told of the sandbox: with a network policy, the domains it allows."""
    network = (
        NETWORK_NOTE.format(domains=", ".join(allowed_domains))
        if allowed_domains
        else NO_NETWORK_NOTE
    )
    return SANDBOX_NOTE.format(network=network)


def files_note(paths: list[str]) -> str:
    if not paths:
        return ""
    listed = "\n".join(f"- {path}" for path in paths)
    return f"\n\nThe user's files are in the sandbox:\n{listed}"


def system_message(
    instructions: str,
    additional: str | None,
    code_interpreter: bool,
    paths: list[str],
    allowed_domains: Sequence[str] = (),
) -> dict[str, Any]:
    text = instructions or ""
    if additional:
        text = f"{text}\n\n{additional}" if text else additional
    if code_interpreter:
        note = sandbox_note(allowed_domains)
        text = f"{text}\n\n{note}{files_note(paths)}" if text else note
    return {"role": "system", "content": text}
