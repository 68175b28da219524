"""Prometheus metrics of the inference service (names documented in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)

REQUESTS = Counter(
    "rtvi_inference_requests_total", "ModelInfer requests by model and gRPC status code", ["model", "status"]
)
IMAGES = Counter("rtvi_inference_images_total", "Images (batch rows) classified", ["model"])
ERRORS = Counter(
    "rtvi_inference_errors_total",
    "Failed ModelInfer requests by reason (decode, too_many_pixels, invalid_input, unknown_model, too_large, not_ready, internal)",
    ["model", "reason"],
)
REQUEST_SECONDS = Histogram(
    "rtvi_inference_request_duration_seconds", "ModelInfer time in the server", ["model"], buckets=_LATENCY_BUCKETS
)
QUEUE_SECONDS = Histogram(
    "rtvi_inference_queue_duration_seconds", "Time a request waited for the batcher", ["model"], buckets=_LATENCY_BUCKETS
)
PREPROCESS_SECONDS = Histogram(
    "rtvi_inference_preprocess_duration_seconds", "Decode and resize time per request", ["model"], buckets=_LATENCY_BUCKETS
)
COMPUTE_SECONDS = Histogram(
    "rtvi_inference_compute_duration_seconds", "Model time per batch", ["model"], buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("rtvi_inference_batch_size", "Rows per model call", ["model"], buckets=_BATCH_BUCKETS)
IN_FLIGHT = Gauge("rtvi_inference_in_flight_requests", "ModelInfer requests being handled", ["model"])
READY = Gauge("rtvi_inference_model_ready", "1 once the model is loaded and warmed up", ["model"])
MODEL_INFO = Gauge(
    "rtvi_inference_model_info",
    "1 per loaded model, labelled with how it runs (a fleet's precisions at a glance), how its engine was chosen "
    "(asked for, the only candidate, check set, measured) and, when measured, each engine's images/s",
    ["model", "engine", "precision", "device", "instances", "threads", "engine_choice", "engine_trial"],
)
ENGINE_TRIAL = Gauge(
    "rtvi_inference_engine_trial_images_per_second",
    "Images/s each candidate engine reached when timed at load (--engine auto with several engines)",
    ["model", "engine"],
)
CHECK_AGREEMENT = Gauge(
    "rtvi_inference_check_agreement",
    "Top-1 agreement with fp32 of the model directory's check set, measured at load on the serving engine and CPU",
    ["model"],
)
