"""ncf.model (see README)."""
