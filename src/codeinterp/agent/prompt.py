"""The Chat Completions request for one run: instructions, the sandbox note, the thread."""

from __future__ import annotations

from typing import Any

SANDBOX_NOTE = """\
You can run Python with the `python` tool. It runs in a stateful sandbox: variables and files \
persist between calls in this conversation. Files live in /mnt/data. The sandbox has no \
internet access, so packages cannot be installed; numpy, pandas, matplotlib, scipy, \
scikit-learn, seaborn, sympy, Pillow, openpyxl and pypdf are available. Charts you draw with \
matplotlib are shown to the user. To give the user a file, save it in /mnt/data and link it \
as sandbox:/mnt/data/<name>."""


def files_note(paths: list[str]) -> str:
    if not paths:
        return ""
    listed = "\n".join(f"- {path}" for path in paths)
    return f"\n\nThe user's files are in the sandbox:\n{listed}"


def system_message(
    instructions: str, additional: str | None, code_interpreter: bool, paths: list[str]
) -> dict[str, Any]:
    text = instructions or ""
    if additional:
        text = f"{text}\n\n{additional}" if text else additional
    if code_interpreter:
        text = f"{text}\n\n{SANDBOX_NOTE}{files_note(paths)}" if text else SANDBOX_NOTE
    return {"role": "system", "content": text}
