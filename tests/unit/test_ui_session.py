"""The trace viewer's login token (api/ui_session.py): it names its key's project, holds no part
of the key, and stops working when it is old or its key is gone."""

from __future__ import annotations

import pytest

from codeinterp.api import ui_session
from codeinterp.errors import Unauthorized

KEYS = {"sk-alpha-0001": "proj_alpha", "sk-beta-0002": "proj_beta"}


def test_a_token_names_its_keys_project_and_holds_no_key() -> None:
    token = ui_session.login(KEYS, "sk-beta-0002")
    assert ui_session.project_of_token(KEYS, token) == "proj_beta"
    issued, mac = token.split(".")
    assert issued.isdigit() and len(mac) == 64 and int(mac, 16) >= 0  # a time and a MAC, no key


def test_a_token_stops_working() -> None:
    token = ui_session.token_for("sk-alpha-0001", issued=1_000_000)
    assert ui_session.project_of_token(KEYS, token, now=1_000_010) == "proj_alpha"
    too_late = 1_000_000 + ui_session.MAX_AGE_SECONDS + 1
    assert ui_session.project_of_token(KEYS, token, now=too_late) is None
    from_the_future = ui_session.token_for("sk-alpha-0001", issued=2_000_000)
    assert ui_session.project_of_token(KEYS, from_the_future, now=1_000_000) is None
    assert ui_session.project_of_token({"sk-beta-0002": "proj_beta"}, token, now=1_000_010) is None


@pytest.mark.parametrize("token", ["", "x", "123", "123.", "abc.def", "1.2.3", ".deadbeef"])
def test_a_malformed_token_names_no_one(token: str) -> None:
    assert ui_session.project_of_token(KEYS, token) is None


def test_a_changed_token_names_no_one() -> None:
    issued, mac = ui_session.token_for("sk-alpha-0001").split(".")
    assert ui_session.project_of_token(KEYS, f"{int(issued) - 1}.{mac}") is None
    flipped = mac[:-1] + ("1" if mac[-1] == "0" else "0")
    assert ui_session.project_of_token(KEYS, f"{issued}.{flipped}") is None


def test_login_refuses_a_key_it_does_not_know() -> None:
    with pytest.raises(Unauthorized):
        ui_session.login(KEYS, "sk-nobody")
    with pytest.raises(Unauthorized):
        ui_session.login(KEYS, "")


@pytest.mark.parametrize("token", ["²." + "0" * 64, "9" * 5000 + "." + "0" * 64, "1.\xe9" * 3])
def test_a_forged_cookie_of_any_shape_names_no_one(token: str) -> None:
    """Not a 500: digits int() refuses, a huge number, text compare_digest refuses."""
    assert ui_session.project_of_token(KEYS, token) is None
