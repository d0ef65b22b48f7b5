"""Every way in: the ``eraser`` CLI, and later the HTTP API and the Python client."""
