"""The window's pages: one module per sidebar entry (the shell imports them by fixed paths)."""
