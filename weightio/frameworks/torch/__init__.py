"""PyTorch: modules traced into archives, archives built into modules, checkpoints read without torch."""
