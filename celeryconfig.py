"""Every Celery setting, derived from Eraser's typed settings."""

from __future__ import annotations

from models.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker_url
result_backend = _settings.result_backend
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
# Arguments are opaque ids only, but keep Flower and logs from echoing them anyway.
task_track_started = True
worker_hijack_root_logger = False
