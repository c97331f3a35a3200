"""The chaos harness (SPEC §11): worker and broker faults against a broker of its own.

`python -m tests.chaos` (or `make chaos`) runs the full scenarios and prints one table row per
scenario and workload; `test_chaos_short.py` runs small ones inside `make test`.
"""
