"""ncf.trace_eval: tracer, trace format, baselines and the evaluation harness."""
