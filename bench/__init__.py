"""hyco's benchmark harness: relay scenarios against direct and haproxy baselines (``scripts/bench``).

Not part of the test suite. See docs/benchmarks.md.
"""
