"""A real headless Chromium for the page tests: Debian's `chromium` binary (scripts/setup-chromium
installs it), driven by Playwright, which is told to use that binary and never downloads one.
Screenshots go to `artifacts/ui/` (CODEINTERP_TEST_ARTIFACTS to move it), kept after the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parents[2]


def chromium_path() -> str:
    found = os.environ.get("CODEINTERP_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError(
            "no chromium on PATH: run scripts/setup-chromium (Debian: apt-get install chromium)"
            " or set CODEINTERP_CHROMIUM to a Chromium binary"
        )
    return found


def artifacts_dir() -> Path:
    path = Path(os.environ.get("CODEINTERP_TEST_ARTIFACTS") or ROOT / "artifacts") / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    # --no-sandbox: Chromium's own sandbox needs user namespaces it is refused when run as root.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
