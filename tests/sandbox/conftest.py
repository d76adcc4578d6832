import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/sandbox runs the real jail: root only.
    for item in items:
        if "/tests/sandbox/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
