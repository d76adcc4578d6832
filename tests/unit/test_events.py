"""Execution: events gathered into one result, and the workspace diff the kernel reports."""

from __future__ import annotations

from codeinterp.sandbox.events import End, Error, Execution, FileChange, Result, Stderr, Stdout
from codeinterp.sandbox.kernel import diff_workspace


def test_execution_gathers_streams_results_and_end() -> None:
    """Stdout and stderr are concatenated; results, the error and the end fields are kept."""
    execution = Execution()
    for event in (
        Stdout("a"),
        Stderr("warn\n"),
        Stdout("b\n"),
        Result({"text/plain": "1"}, kind="display_data"),
        Result({"text/plain": "42"}, kind="execute_result"),
        Error("ValueError", "bad", "Traceback..."),
        End("error", 3, 12.5, files=(FileChange("/mnt/data/x", "x", 1, "created"),)),
    ):
        execution.add(event)
    assert execution.stdout == "ab\n" and execution.stderr == "warn\n"
    assert execution.text == "42"
    assert execution.status == "error" and execution.execution_count == 3
    assert execution.error is not None and execution.error.name == "ValueError"
    assert execution.to_dict()["files"] == [
        {"path": "/mnt/data/x", "name": "x", "size": 1, "change": "created"}
    ]


def test_text_is_none_without_an_expression_value() -> None:
    """Only an execute_result counts as the execution's value."""
    execution = Execution()
    execution.add(Result({"text/plain": "shown"}, kind="display_data"))
    assert execution.text is None


def test_workspace_diff_reports_created_modified_and_deleted() -> None:
    """Size, mtime or inode changes count as modified; missing and new names are reported."""
    before = {"same": (1, 10, 1), "changed": (1, 10, 2), "gone": (5, 10, 3)}
    after = {"same": (1, 10, 1), "changed": (2, 11, 2), "new": (7, 12, 4)}
    assert diff_workspace(before, after) == [
        {"path": "/mnt/data/changed", "name": "changed", "size": 2, "change": "modified"},
        {"path": "/mnt/data/gone", "name": "gone", "size": 0, "change": "deleted"},
        {"path": "/mnt/data/new", "name": "new", "size": 7, "change": "created"},
    ]
