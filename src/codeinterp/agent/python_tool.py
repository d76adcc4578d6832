"""The `python` tool as the model sees it: its definition, its arguments, its result text."""

from __future__ import annotations

import json
from typing import Any

TOOL_NAME = "python"
MAX_RESULT_CHARS = 20_000

# tool_choice that makes the model call the python tool (what forcing code_interpreter means)
FORCED_CHOICE: dict[str, Any] = {"type": "function", "function": {"name": TOOL_NAME}}


def tool_choice_for_model(choice: Any) -> Any:
    """A door's `tool_choice` in Chat Completions terms, for the model: forcing the code
    interpreter forces the python tool; a function named in the Responses form
    (``{"type": "function", "name"}``) gets the Chat form; anything else the model cannot be
    asked for (file_search, say) is "auto". None stays None (the model's default)."""
    if choice is None or isinstance(choice, str):
        return choice
    if not isinstance(choice, dict):
        return "auto"
    if choice.get("type") == "code_interpreter":
        return FORCED_CHOICE
    if choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str):
            return {"type": "function", "function": {"name": name}}
    return "auto"


DEFINITION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Execute Python code in a stateful Jupyter-like sandbox and get back stdout, stderr, "
            "the value of the last expression and any error. Variables, imports and files "
            "persist between calls. Files are in /mnt/data. Matplotlib figures are shown to "
            "the user automatically. There is no internet access."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}


def code_from_arguments(arguments: str) -> str:
    """The code in a call's arguments: {"code": "..."}, or the raw text that some models send."""
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):  # the model's text, nested too deep for the parser
        return arguments
    if isinstance(parsed, dict):
        value = parsed.get("code", parsed.get("input", ""))
        return value if isinstance(value, str) else json.dumps(value)
    return parsed if isinstance(parsed, str) else arguments


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def partial_code(arguments: str) -> str:
    """The code decoded so far from incomplete JSON arguments, for relaying while they stream.

    Best effort: the characters of the "code" string that are complete (an escape sequence cut in
    half waits for the next fragment). Arguments that are not a JSON object are raw code.
    """
    stripped = arguments.lstrip()
    if not stripped:
        return ""
    if not stripped.startswith("{"):
        return arguments
    key = stripped.find('"code"')
    if key < 0:
        return ""
    colon = stripped.find(":", key + 6)
    quote = stripped.find('"', colon + 1) if colon >= 0 else -1
    if quote < 0:
        return ""
    out: list[str] = []
    i = quote + 1
    while i < len(stripped):
        ch = stripped[i]
        if ch == '"':
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(stripped):
            break
        kind = stripped[i + 1]
        if kind == "u":
            digits = stripped[i + 2 : i + 6]
            if len(digits) < 4:
                break
            code = int(digits, 16)
            if 0xD800 <= code < 0xDC00:  # a surrogate pair: wait for, then join, its second half
                low = stripped[i + 6 : i + 12]
                if len(low) < 6:
                    break
                if low.startswith("\\u") and 0xDC00 <= int(low[2:], 16) < 0xE000:
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00)
                    i += 6
            out.append(chr(code))
            i += 6
        else:
            out.append(_ESCAPES.get(kind, kind))
            i += 2
    return "".join(out)


def trim(text: str, limit: int) -> str:
    """`text` cut in the middle to `limit` characters, with a note of how much was left out."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    dropped = len(text) - head - tail
    return f"{text[:head]}\n... [{dropped} characters omitted] ...\n{text[-tail:]}"


def result_for_model(execution: dict[str, Any], images: int) -> str:
    """What the model reads back from an execution (the shared JSON shape, Execution.to_dict):
    output, value, error, new files; long output trimmed."""
    parts: list[str] = []
    if execution.get("stdout"):
        parts.append(execution["stdout"].rstrip("\n"))
    if execution.get("stderr"):
        parts.append("[stderr]\n" + execution["stderr"].rstrip("\n"))
    for result in execution.get("results") or ():
        if result.get("type") == "execute_result" and "text/plain" in result.get("data", {}):
            parts.append(str(result["data"]["text/plain"]))
    if images:
        parts.append(f"[{images} image(s) were displayed to the user]")
    error = execution.get("error")
    if error is not None:
        parts.append(error.get("traceback") or f"{error.get('name')}: {error.get('value')}")
    status = execution.get("status")
    if status not in ("ok", "error") and execution.get("message"):
        parts.append(f"[{status}] {execution['message']}")
    written = [f["path"] for f in execution.get("files") or () if f.get("change") != "deleted"]
    if written:
        parts.append("[files written: " + ", ".join(written) + "]")
    text = "\n".join(parts) if parts else "[no output]"
    return trim(text, MAX_RESULT_CHARS)
