"""Transforms users run on weights (fold, prune, quantize) and what each one cost.

Every transform takes an ``Archive`` and returns a new one; ``measure`` runs the original and
the transformed archive on the same seeded probe inputs through the numpy runtime and says how
far the outputs moved, and ``importance`` reads the first layer's weights into a ranking. The
public verbs (``weightio.fold``, ``weightio.prune``, ``weightio.quantize``,
``weightio.importance``) open sources and call these; nothing here imports a framework.
"""
