"""The operator console: server-rendered pages at ``/console/`` over the same job
store, registry, API keys and operations as the HTTP API (see ``routes``)."""
