"""Renderers for inspect, diff and explain: text (rich), JSON, PNG (matplotlib) and HTML.

``text`` needs only rich; ``plots`` imports matplotlib (the ``plot`` extra) lazily with the Agg
backend, so nothing here needs a display; ``html`` writes one self-contained file with the PNGs
embedded as base64 and no network access at all.
"""
