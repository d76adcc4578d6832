"""The `codeinterp` command line."""
