"""The public verbs: read, write, convert, verify, diff, explain, cast."""
