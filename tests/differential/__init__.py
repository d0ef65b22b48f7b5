"""Differential testing of Eraser against the database's own cascade (issue 20).

* ``schemas``: hypothesis strategies for random multi-tenant schemas and their data;
* ``ddl``: a case written out as SQL for one engine (and as its oracle twin);
* ``loading``: create, fill and drop a case; ``snapshot``: read it back, find
  dangling references;
* ``oracle``: the expected outcome, from the twin whose blocking keys cascade;
* ``erasure``: the one place that calls the engine (``erase_subject``);
* ``compare``: one check of an erasure against the oracle, at several batch sizes;
* ``sessions``: the server-side statement limit on every session;
* ``sql_case``: helpers for the hand-written regression cases.
"""
