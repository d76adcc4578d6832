"""Folding streamed tool-call fragments from the model's raw chunks into whole calls."""

from __future__ import annotations

import pytest

from codeinterp.agent.upstream import ToolCallDraft, UpstreamFailure, _merge_tool_call


def test_fragments_of_two_calls_are_folded_by_index() -> None:
    drafts: dict[int, ToolCallDraft] = {}
    fragments = [
        {
            "index": 0,
            "id": "call_a",
            "type": "function",
            "function": {"name": "py", "arguments": ""},
        },
        {"index": 1, "id": "call_b", "function": {"name": "other", "arguments": "{}"}},
        {"index": 0, "function": {"name": "thon", "arguments": '{"code": '}},
        {"index": 0, "function": {"arguments": '"1+1"}'}},
    ]
    seen = [_merge_tool_call(drafts, f)[1] for f in fragments]
    assert seen == ["", "{}", '{"code": ', '"1+1"}']
    assert drafts[0] == ToolCallDraft(0, "call_a", "python", '{"code": "1+1"}')
    assert drafts[1] == ToolCallDraft(1, "call_b", "other", "{}")


def test_a_fragment_without_index_is_the_first_call() -> None:
    """Some servers (llama.cpp, older vLLM) leave out the index when there is one call."""
    drafts: dict[int, ToolCallDraft] = {}
    _merge_tool_call(drafts, {"id": "call_x", "function": {"name": "python", "arguments": "{"}})
    _merge_tool_call(drafts, {"function": {"arguments": "}"}})
    assert drafts == {0: ToolCallDraft(0, "call_x", "python", "{}")}


def test_null_fields_are_ignored() -> None:
    drafts: dict[int, ToolCallDraft] = {}
    draft, fragment = _merge_tool_call(
        drafts, {"index": 0, "id": None, "function": {"name": None, "arguments": None}}
    )
    assert (draft, fragment) == (ToolCallDraft(0), "")


@pytest.mark.parametrize("fragment", ["text", ["list"], {"index": "0"}, {"index": None}])
def test_a_malformed_fragment_fails_the_turn_clearly(fragment: object) -> None:
    with pytest.raises(UpstreamFailure, match="malformed tool call"):
        _merge_tool_call({}, fragment)
