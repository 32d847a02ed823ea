"""ncf.hw (see README)."""
