"""Delivery: from ``emit()``'s encoded bytes to a destination, without losing one.

.. versionadded:: 0.1.0
"""
