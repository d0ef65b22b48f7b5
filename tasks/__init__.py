"""Celery orchestration: submit, erase_service, finalize_job, reaper, dead letters."""
