"""Layout transforms between framework layouts and the canonical one, and which tensors are feature maps."""
