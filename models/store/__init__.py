"""The job store: its tables, its transactions and every named operation on them."""
