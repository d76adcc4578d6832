"""File names from callers: cleaned into safe relative paths, or refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox.workspace import clean_relative_path


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a.csv", ["a.csv"]),
        ("dir/a.csv", ["dir", "a.csv"]),
        ("./dir//a.csv", ["dir", "a.csv"]),
        ("/mnt/data/out/plot.png", ["out", "plot.png"]),
    ],
)
def test_valid_names_are_split_into_components(name: str, parts: list[str]) -> None:
    """Relative names and /mnt/data paths become their components."""
    assert clean_relative_path(name) == parts


@pytest.mark.parametrize(
    "name",
    ["", "/etc/passwd", "../x", "a/../../x", "a/..", "nul\x00byte", ".", "/mnt/data/", "x" * 300],
)
def test_escaping_or_empty_names_are_refused(name: str) -> None:
    """Absolute paths outside /mnt/data, `..`, NUL and empty names raise InvalidRequest."""
    with pytest.raises(InvalidRequest):
        clean_relative_path(name)


@given(st.text(min_size=1, max_size=60))
def test_cleaned_paths_never_leave_the_workspace(name: str) -> None:
    """Whatever the input, an accepted path has no `..`, no empty part and no NUL."""
    try:
        parts = clean_relative_path(name)
    except InvalidRequest:
        return
    assert parts
    for part in parts:
        assert part not in ("", ".", "..")
        assert "/" not in part and "\x00" not in part
