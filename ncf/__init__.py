"""ncf: a learned branch predictor and prefetcher, from program traces to verified hardware.

The stages live in the card folders and are imported as ``ncf.trace_eval``, ``ncf.model``,
``ncf.quant`` and ``ncf.hw``; ``ncf.cli`` is the one command line.
"""
__version__ = "0.1.0"
