"""What the server tells about itself: traces (tracing.py). A leaf: it imports no other layer."""
