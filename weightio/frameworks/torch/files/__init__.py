"""PyTorch checkpoint files: a data-only unpickler, state dicts, .pt/.pt2 writes."""
