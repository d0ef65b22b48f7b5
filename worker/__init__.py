"""The erasure engine (reflect -> plan -> execute) and the Celery app. The engine
knows nothing of Celery: it can be called directly and tested without a broker."""
