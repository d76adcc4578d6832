"""Object ids in OpenAI's style: a type prefix and an unguessable random suffix."""

from __future__ import annotations

import secrets

PREFIXES = {
    "file": "file-",
    "assistant": "asst_",
    "thread": "thread_",
    "message": "msg_",
    "run": "run_",
    "step": "step_",
    "call": "call_",
    "request": "req_",
    "session": "sess_",
    "container": "cntr_",
    "container_file": "cfile_",
    "response": "resp_",
    "code_interpreter_call": "ci_",
    "function_call": "fc_",
    "chat_completion": "chatcmpl-",
    "execution": "exec_",
    "snapshot": "snap_",  # a saved state of `codeinterp mcp` without a server (a local file)
}


def new_id(kind: str) -> str:
    """A new id for an object of `kind` (a key of PREFIXES): 24 random hex digits."""
    return PREFIXES[kind] + secrets.token_hex(12)
