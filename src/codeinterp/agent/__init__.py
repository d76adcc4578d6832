"""The run loop: model ⇄ python tool, with steps, messages, deltas and events."""
