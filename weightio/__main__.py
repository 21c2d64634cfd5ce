"""``python -m weightio`` runs the same CLI as ``weightio``."""

from weightio.cli import entry

entry()
