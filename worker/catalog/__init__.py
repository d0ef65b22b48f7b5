"""A live database's schema as the engine sees it: the model (``model``), how it is
read (``reflection``), its fingerprint and its cheap version token (``version``)."""
