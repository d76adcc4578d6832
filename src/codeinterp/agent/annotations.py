"""Files the model cites as sandbox:/mnt/data/NAME become file_path annotations."""

from __future__ import annotations

import re
from dataclasses import dataclass

SANDBOX_LINK = re.compile(r"sandbox:/mnt/data/[^\s)\]\"'<>]+")


@dataclass(frozen=True)
class Citation:
    text: str  # the cited link, e.g. sandbox:/mnt/data/out.csv
    name: str  # the path under /mnt/data
    start: int
    end: int


def find_citations(text: str) -> list[Citation]:
    citations = []
    for match in SANDBOX_LINK.finditer(text):
        link = match.group(0).rstrip(".,;:!?")
        name = link[len("sandbox:/mnt/data/") :]
        if name:
            citations.append(Citation(link, name, match.start(), match.start() + len(link)))
    return citations
