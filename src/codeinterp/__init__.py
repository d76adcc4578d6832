"""codeinterp: the open, self-hosted Code Interpreter."""

__version__ = "0.1.0"
