"""Sandbox sessions as the server sees them: one per thread or container, asleep when idle."""

from .manager import ManagedSession, SessionLimits, SessionManager, SessionOptions
from .persistence import Persistence

__all__ = ["ManagedSession", "Persistence", "SessionLimits", "SessionManager", "SessionOptions"]
