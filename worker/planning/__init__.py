"""Planning an erasure: the plan (``model``), how it is built (``building``), its
cycles, the registry's policies, subject values and the SQL predicates."""
