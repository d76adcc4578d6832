"""Sandbox sessions as the server sees them: one per thread (later: per container)."""

from .manager import ManagedSession, SessionManager

__all__ = ["ManagedSession", "SessionManager"]
