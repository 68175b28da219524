"""The one typed configuration of `rtvi serve`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi._private.settings import require, setting

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("0.0.0.0", "address the gRPC server binds to")
    port: int = setting(8001, "gRPC port (Open Inference Protocol v2 and grpc.health.v1)")
    metrics_port: int = setting(8002, "Prometheus metrics HTTP port; 0 disables it")
    model: str = setting("resnet18", "torchvision classification architecture", metavar="NAME")
    model_name: str = setting("", "v2 model name clients address; empty means the architecture name")
    weights: str = setting(
        "DEFAULT",
        "DEFAULT (torchvision's pretrained weights from the torch hub cache; never downloaded "
        "at run time), none (random init: meaningless labels, for tests), or a checkpoint path",
        metavar="WEIGHTS",
    )
    precision: str = setting("fp32", "compute precision: bf16 uses CPU/CUDA autocast, fp16 needs CUDA", choices=PRECISIONS)
    device: str = setting("auto", "where the model runs: auto picks CUDA when present", choices=DEVICES)
    channels_last: bool = setting(True, "run convolutions in channels_last memory format (faster on CPU and tensor cores)")
    threads: int = setting(0, "torch intra-op threads per instance; 0 keeps torch's default (one per core)")
    instances: int = setting(
        1,
        "model instances computing batches concurrently, each on its own thread (Triton's instance "
        "count); on CPU, N instances x 1 thread keeps the cores busier than 1 x N while images decode",
    )
    compile: bool = setting(False, "torch.compile the model (slower start, faster steady state)")
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

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, f"port must be 1..65535, got {self.port}")
        require(0 <= self.metrics_port < 65536, f"metrics port must be 0..65535, got {self.metrics_port}")
        require(self.max_batch_size >= 1, f"max batch size must be >= 1, got {self.max_batch_size}")
        require(self.max_queue_delay_ms >= 0, "max queue delay must be >= 0 ms")
        require(self.threads >= 0, "threads must be >= 0")
        require(self.instances >= 1, "instances must be >= 1")
        require(self.preprocess_workers >= 1, "preprocess workers must be >= 1")
        require(self.max_image_pixels >= 1, "max image pixels must be >= 1")
        require(self.max_message_mb >= 1, "max message size must be >= 1 MiB")
        require(self.shutdown_grace_s >= 0 and self.shutdown_delay_s >= 0, "shutdown delay and grace must be >= 0 s")
        require(
            not (self.precision == "fp16" and self.device == "cpu"),
            "precision fp16 needs CUDA; use bf16 on CPU",
        )

    @property
    def served_name(self) -> str:
        return self.model_name or self.model

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024
