"""Studies: plain functions that string the stages together (experiment, lead sweep, bit widths,
hardware sweep, classification, benchmarks, the demo), sharing one content-hash stage cache."""
