"""ncf.quant (see README)."""
