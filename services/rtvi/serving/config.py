"""The one typed configuration of `rtvi serve`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rtvi.protocol.tls import PemFiles
from rtvi.settings import require, setting

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
ENGINE_CHOICES = ("auto", "torch", "onnxruntime", "openvino")
ACCURACY_DROP_ACTIONS = ("fail", "warn")


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("0.0.0.0", "address the gRPC server binds to")
    port: int = setting(8001, "gRPC port (Open Inference Protocol v2 and grpc.health.v1)")
    metrics_port: int = setting(8002, "Prometheus metrics HTTP port; 0 disables it")
    health_port: int = setting(
        0, "plaintext gRPC port serving grpc.health.v1 and nothing else (readiness \"\" and "
        "inference.GRPCInferenceService, liveness \"liveness\"), for Kubernetes' gRPC probes, which cannot speak "
        "TLS; 0: health only on --port")
    tls_cert: str = setting(
        "", "PEM certificate chain: with --tls-key, --port speaks TLS only; re-read when the file changes (a "
        "rotated Kubernetes Secret), at the next connection", metavar="FILE")
    tls_key: str = setting("", "PEM private key of --tls-cert (unencrypted)", metavar="FILE")
    tls_client_ca: str = setting(
        "", "PEM CA bundle: clients must present a certificate it signed (mutual TLS); needs --tls-cert",
        metavar="FILE")
    model: str = setting(
        "resnet18", "a torchvision classification architecture (served as ONNX from --model-cache unless --engine "
        "torch), or a model directory (model.onnx | model.pt2 | model.pt, labels.txt, config.yaml)", metavar="NAME|DIR")
    model_cache: str = setting(
        "", "where torchvision names are exported to ONNX once (by architecture, weights and rtvi version) and "
        "found again without torch; empty = $XDG_CACHE_HOME/rtvi/models or ~/.cache/rtvi/models", metavar="DIR")
    model_name: str = setting("", "v2 model name clients address; empty means the architecture or directory name")
    model_repository: str = setting(
        "", "serve every model directory under DIR at once, each under its folder name (replaces --model)",
        metavar="DIR")
    engine: str = setting(
        "auto", "auto: torch for TorchScript/torch.export; for ONNX (and torchvision names, exported to ONNX) every "
        "installed ONNX engine is timed at load and the fastest serves; a name forces that engine", choices=ENGINE_CHOICES)
    engine_trial_s: float = setting(
        3.0, "with --engine auto and several engines for a model: seconds spent timing them at load, in "
        "alternating rounds (each runs at least two)")
    on_accuracy_drop: str = setting(
        "fail", "a model directory's check set (held-out images with their fp32 answers) runs at load on the "
        "serving engine and CPU; below its minimum agreement, fail refuses to serve (exit 2), warn serves anyway",
        choices=ACCURACY_DROP_ACTIONS)
    weights: str = setting(
        "DEFAULT",
        "for an architecture name: DEFAULT (torchvision's pretrained weights from the torch hub cache; never "
        "downloaded at run time), none (random init: meaningless labels, for tests), or a checkpoint path",
        metavar="WEIGHTS",
    )
    precision: str = setting(
        "auto", "compute precision; auto never emulates: bf16 only on CPUs with native bf16 (AVX512-BF16, AMX), "
        "fp16 on CUDA, else fp32; an int8 artifact runs as stored", choices=PRECISIONS)
    device: str = setting("auto", "where the model runs: auto picks CUDA when present", choices=DEVICES)
    channels_last: bool = setting(True, "run convolutions in channels_last memory format (faster on CPU and tensor cores)")
    threads: int = setting(0, "intra-op threads per instance; 0 = auto (usable CPUs / instances)")
    instances: int = setting(
        0,
        "model instances computing batches concurrently, each on its own thread (Triton's instance "
        "count); 0 = auto: one per usable CPU (affinity and cgroup quota) up to 4; on CPU, N instances "
        "x 1 thread keeps the cores busier than 1 x N while images decode",
    )
    compile: bool = setting(False, "torch engine: torch.compile the model (slower start, faster steady state)")
    max_batch_size: int = setting(16, "largest batch the dynamic batcher forms; larger requests are rejected")
    max_queue_delay_ms: float = setting(5.0, "how long a request may wait for others to fill a batch")
    preprocess_workers: int = setting(2, "threads decoding and resizing images off the event loop")
    fast_decode: bool = setting(
        True,
        "decode JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain when the result still covers "
        "the crop (2-4x faster decode, marginally softer input)",
    )
    max_image_pixels: int = setting(
        40_000_000,
        "largest image (width x height, read from its header) the server decodes; bigger ones are "
        "rejected with INVALID_ARGUMENT before any pixel is allocated (decompression bombs)",
    )
    max_message_mb: int = setting(64, "largest gRPC request or response in MiB")
    shutdown_delay_s: float = setting(
        0.0,
        "on SIGTERM, keep serving this long with health NOT_SERVING before refusing new requests, "
        "so load balancers and endpoints stop routing here first (Kubernetes: a few seconds)",
    )
    shutdown_grace_s: float = setting(20.0, "on SIGTERM, how long in-flight requests may then finish")
    liveness_timeout_s: float = setting(
        60.0, "health service 'liveness' turns NOT_SERVING when batches wait and none completed for this long "
        "(a wedged model; Kubernetes then restarts the pod)")

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, f"port must be 1..65535, got {self.port}")
        require(0 <= self.metrics_port < 65536, f"metrics port must be 0..65535, got {self.metrics_port}")
        require(0 <= self.health_port < 65536, f"health port must be 0..65535, got {self.health_port}")
        require(not self.health_port or self.health_port not in (self.port, self.metrics_port),
                "--health-port must differ from --port and --metrics-port")
        require(bool(self.tls_cert) == bool(self.tls_key), "--tls-cert and --tls-key go together")
        require(bool(self.tls_cert) or not self.tls_client_ca, "--tls-client-ca needs --tls-cert and --tls-key")
        require(self.max_batch_size >= 1, f"max batch size must be >= 1, got {self.max_batch_size}")
        require(self.max_queue_delay_ms >= 0, "max queue delay must be >= 0 ms")
        require(self.threads >= 0, "threads must be >= 0")
        require(self.instances >= 0, "instances must be >= 0 (0 = auto)")
        require(self.liveness_timeout_s > 0, "liveness timeout must be > 0 s")
        require(self.engine_trial_s >= 0, "engine trial must be >= 0 s")
        require(not (self.model_repository and self.model_name),
                "--model-name names a single model; a repository serves each model under its folder name")
        require(self.preprocess_workers >= 1, "preprocess workers must be >= 1")
        require(self.max_image_pixels >= 1, "max image pixels must be >= 1")
        require(self.max_message_mb >= 1, "max message size must be >= 1 MiB")
        require(self.shutdown_grace_s >= 0 and self.shutdown_delay_s >= 0, "shutdown delay and grace must be >= 0 s")
        require(
            not (self.precision == "fp16" and self.device == "cpu"),
            "precision fp16 needs CUDA; use bf16 on CPU",
        )

    @property
    def tls(self) -> PemFiles | None:
        """The server's TLS files, or None for plaintext."""
        if not self.tls_cert:
            return None
        return PemFiles(self.tls_cert, self.tls_key, self.tls_client_ca,
                        flags=("--tls-cert", "--tls-key", "--tls-client-ca"))

    @property
    def served_name(self) -> str:
        """The v2 name of the single model served without a repository."""
        return self.model_name or os.path.basename(os.path.normpath(self.model))

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024
