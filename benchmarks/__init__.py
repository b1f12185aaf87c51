"""Benchmarks that put streammetrics beside its peers, measured in one run on one machine.

``python -m benchmarks [--quick] [--case ingest|http|scale|memory]``; see ``README.md``.
Each case module exposes a ``run_case(...)`` that returns a ``CaseResult``; nothing runs
on import.
"""
