"""Tamper evidence: hash-chained entries, signed checkpoints, a forward-secure seal.

``_format`` holds the wire format (shared with ``auditkeep verify``); the
writer side lives next to it. See docs/integrity.md.
"""
