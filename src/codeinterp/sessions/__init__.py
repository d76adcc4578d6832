"""Sandbox sessions as the server sees them: one per thread (later: per container)."""

from .manager import ManagedSession, SessionLimits, SessionManager

__all__ = ["ManagedSession", "SessionLimits", "SessionManager"]
