"""Every Prometheus metric of the service, on one registry per app instance.

A registry per app (not the process-global default) lets tests build several apps in
one process without "Duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STAGES = ("decode", "detect", "crop", "infer", "pnp", "store", "encode")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "jmlr_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ("route", "method", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "jmlr_stage_duration_seconds",
            "Time spent per pipeline stage (per request; infer includes queue wait).",
            ("stage",),
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.decode_latency = Histogram(
            "jmlr_decode_duration_seconds",
            "Time to decode an upload by its format (JPEG, PNG, WEBP, HEIF, AVIF): HEIC costs ~10x JPEG.",
            ("format",),
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "jmlr_batch_size",
            "Crops per inference batch run by the dynamic batcher.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.queue_wait = Histogram(
            "jmlr_queue_wait_seconds",
            "Time a crop waited in the batcher queue before its batch started.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("jmlr_queue_depth", "Crops waiting in the batcher queue.", registry=r)
        self.faces_per_request = Histogram(
            "jmlr_faces_per_request",
            "Faces reconstructed per /reconstruct request.",
            buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16),
            registry=r,
        )
        self.errors = Counter("jmlr_errors", "Error answers by code.", ("code",), registry=r)
        self.model_info = Info("jmlr_model", "The model being served.", registry=r)
        self.model_ready = Gauge("jmlr_model_ready", "1 once the model is loaded and warmed up.", registry=r)
        # --- reliability: dependencies, admission, dropped work, bounded memory
        self.dependency_up = Gauge(
            "jmlr_dependency_up", "1 while a dependency answered its last call.", ("dependency",), registry=r
        )
        self.dependency_errors = Counter(
            "jmlr_dependency_errors", "Failed calls to a dependency, by error code.", ("dependency", "code"), registry=r
        )
        self.meshes_not_stored = Counter(
            "jmlr_meshes_not_stored",
            "Reconstructed faces whose mesh was not stored, by reason (the response says so per face).",
            ("reason",),
            registry=r,
        )
        self.meshes_evicted = Counter(
            "jmlr_meshes_evicted", "Meshes evicted before their TTL by the SQLite size cap (oldest first).", registry=r
        )
        self.rejected = Counter(
            "jmlr_rejected",
            "Requests refused at the door before their body was read, by reason.",
            ("reason",),
            registry=r,
        )
        self.dropped = Counter(
            "jmlr_dropped",
            "Admitted requests whose work was dropped: client_gone or deadline.",
            ("reason",),
            registry=r,
        )
        self.in_flight = Gauge("jmlr_in_flight_requests", "Admitted /reconstruct requests not finished yet.",
                               registry=r)
        self.decode_pixels = Gauge(
            "jmlr_decode_pixels_in_use", "Pixels of decoded images currently held (bounded by the pixel budget).",
            registry=r
        )

    def record_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage=stage).observe(seconds)

    def set_model(self, name: str, version: str, device: str, num_vertices: int) -> None:
        self.model_info.info(
            {"name": name, "version": str(version), "device": device, "num_vertices": str(num_vertices)}
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
