"""Faust table definitions, one module per domain."""
