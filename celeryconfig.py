"""Every Celery setting, derived from Eraser's typed settings."""

from __future__ import annotations

from kombu.entity import Exchange, Queue

from models.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker_url
result_backend = _settings.result_backend

# JSON only: no pickle anywhere, and messages any service can read.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A task is acknowledged when it ends, not when it starts: a worker that dies
# mid-erasure leaves the message to be redelivered (the engine resumes where the
# last committed batch ended).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_default_queue = _settings.default_queue
task_queues = [
    Queue(
        _settings.default_queue,
        Exchange(_settings.default_queue),
        routing_key=_settings.default_queue,
    )
]
task_create_missing_queues = True

# Flower: task events let it show tasks live (readable names, opaque-id arguments).
# They cost a Redis publish per state change, so they can be turned off
# (ERASER_TASK_EVENTS=false; Flower can still enable them on running workers). No
# STARTED state and no sent events: the job store records when a task runs.
worker_send_task_events = _settings.task_events
task_send_sent_event = False
task_track_started = False
result_extended = False

# Redelivery. An unacknowledged message (its worker died) comes back after the
# visibility timeout; workers sweep for such messages every few seconds instead of
# kombu's default (~100 s), so a crashed worker's task resumes within about 30 s.
# Nothing is held longer than the timeout: executions stop after one time slice and
# continue in a new delivery, and retry delays are capped (the settings check
# visibility > slice + longest backoff). The result backend gets the same timeout.
_redis_options = {
    "visibility_timeout": _settings.visibility_timeout_seconds,
    "unacked_restore_interval": _settings.unacked_restore_interval_seconds,
    "unacked_restore_throttle": 1,
}
broker_transport_options: dict[str, object] = {}
if _settings.broker_url.startswith("redis"):
    broker_transport_options = dict(_redis_options)
elif _settings.broker_url.startswith("memory://"):
    # The embedded default: the in-process transport polls its queues; kombu's 1 s
    # default would add up to a second per hop of a chord.
    broker_transport_options = {"polling_interval": 0.005}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout_seconds}
# A worker takes a message only when a pool process is free, so no message waits in
# a busy worker's buffer while its visibility timeout runs out (Redis broker only).
worker_disable_prefetch = _settings.broker_url.startswith("redis")

worker_hijack_root_logger = False
broker_connection_retry_on_startup = True
