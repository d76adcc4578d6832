"""The HTTP surface: FastAPI routes that only decode and encode, one error table."""
