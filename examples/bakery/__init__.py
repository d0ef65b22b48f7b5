"""The bakery estate: twelve service databases of a SaaS for bakeries, for demos and tests."""
