"""Shared widgets: toasts, confirmation, empty and loading states, a Polars table, schema forms."""
