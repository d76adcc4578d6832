"""The page tests use the contract tests' scripted upstream model (one per module)."""

from tests.contract.conftest import upstream

__all__ = ["upstream"]
