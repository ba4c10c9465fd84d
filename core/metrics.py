"""Taleweaver's Prometheus metrics, declared once for the bot, the cogs and the model service.

Defined at import in prometheus-client's default registry, which is what `/metrics` serves; a
model service in another process (Ray Serve) exports the same names from its own registry.
Labels are a fixed, small set (commands, outcomes, reasons, HTTP statuses), never user data.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)

COMMANDS = Counter(
    "taleweaver_commands_total", "Slash commands and buttons handled, by command and outcome.", ["command", "outcome"]
)
"""outcome: ok, refused (the user's mistake or a busy bot, answered politely) or error (a bug)."""
QUEUE_LENGTH = Gauge("taleweaver_queue_length", "Model requests waiting or running.")
MODEL_PRECISION = Gauge("taleweaver_model_precision", "1 for the precision stories are written in.", ["precision"])
"""precision: fp32, bf16, fp16 or int8 (`model.precision`; the reason for the choice is in the start-up log)."""
REJECTIONS = Counter("taleweaver_rejections_total", "Model requests refused at admission, by reason.", ["reason"])
"""reason: prompt, user_busy, rate_limited, queue_full."""
BATCH_SIZE = Histogram(
    "taleweaver_batch_size",
    "Stories in each decoding step of the continuous batch, and requests in each static batch (beam, /why).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
TOKENS_WRITTEN = Counter("taleweaver_tokens_written_total", "Tokens generated for stories.")
TIME_TO_FIRST_TEXT = Histogram(
    "taleweaver_time_to_first_text_seconds", "From a story's admission to its first text.", buckets=LATENCY_BUCKETS
)
STORY_DURATION = Histogram(
    "taleweaver_story_duration_seconds", "From a story's admission to its end.", buckets=LATENCY_BUCKETS
)
WHY_DURATION = Histogram(
    "taleweaver_why_duration_seconds", "From a /why request's admission to its result.", buckets=LATENCY_BUCKETS
)
EVENT_LOOP_LAG = Histogram(
    "taleweaver_event_loop_lag_seconds",
    "How late the event loop ran a timer: a busy or blocked loop answers Discord late.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DISCORD_HTTP_ERRORS = Counter(
    "taleweaver_discord_http_errors_total", "Discord API calls that failed, by HTTP status.", ["status"]
)
DISCORD_RATE_LIMITS = Counter("taleweaver_discord_rate_limits_total", "Discord API calls answered 429 and retried.")
DATABASE_SECONDS = Histogram(
    "taleweaver_database_seconds",
    "Preferences and story database operations, from asking for a connection to the answer (a write's commit), "
    "by operation and outcome.",
    ["operation", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
"""operation: the store's call (`set`, `resolve`, `story.add_part`, ...); outcome: ok, refused (a bad
value, nothing written), busy, unavailable, or error (a bug)."""
