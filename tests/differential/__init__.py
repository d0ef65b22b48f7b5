"""Differential testing of Eraser against the database's own cascade (issue 20).

``schemas`` generates random multi-tenant schemas and data, ``ddl`` writes them out
for one engine, ``oracle`` computes the expected outcome in a twin database whose
blocking keys cascade, ``erasure`` is the one place that calls the engine, and
``compare`` checks an erasure against the oracle.
"""
