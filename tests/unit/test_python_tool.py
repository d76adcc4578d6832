"""Decoding the python tool's arguments, whole and while they stream."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from codeinterp.agent.python_tool import code_from_arguments, partial_code


@given(st.text())
def test_every_prefix_decodes_to_a_prefix_of_the_code(code: str) -> None:
    """However the JSON arguments are cut, the decoded part is a prefix of the code, and the
    whole arguments decode to the whole code (surrogate pairs are never split)."""
    arguments = json.dumps({"code": code})
    for cut in range(len(arguments) + 1):
        assert code.startswith(partial_code(arguments[:cut]))
    assert partial_code(arguments) == code
    assert code_from_arguments(arguments) == code


def test_raw_code_is_accepted_as_is() -> None:
    """Models that send bare code instead of JSON still run it."""
    assert code_from_arguments("print(1)") == "print(1)"
    assert partial_code("print(") == "print("


def test_emoji_is_relayed_whole() -> None:
    """An escaped emoji is held back until both halves of its surrogate pair have arrived."""
    arguments = json.dumps({"code": "print('🎉')"})  # ensure_ascii: \\ud83c\\udf89
    half = arguments.index("\\udf89")
    assert partial_code(arguments[:half]) == "print('"
    assert partial_code(arguments) == "print('🎉')"
