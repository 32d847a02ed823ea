"""cocotb testbenches for the generated predictor (see README)."""
