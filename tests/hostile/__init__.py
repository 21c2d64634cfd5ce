"""The bad-input battery: a generator of hostile files and a forking runner (see RELIABILITY.md)."""
