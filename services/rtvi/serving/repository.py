"""The model repository: v2 name -> (source, engine, task, batcher, instances).

Names are known at start (a repository's folder names, or the single model's name),
so a request for a model still loading gets UNAVAILABLE and an unknown name NOT_FOUND.
Each model is loaded and warmed up on its own compute threads, one per instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtvi.serving import loader, metrics
from rtvi.serving.batcher import BatchStats, DynamicBatcher
from rtvi.serving.config import ServerConfig
from rtvi.serving.engines.base import Engine, ExecutionPlan
from rtvi.serving.errors import ModelNotFound
from rtvi.serving.hardware import cpu_info
from rtvi.serving.modeldir import ModelSource, repository_entries
from rtvi.serving.normalize import Normalizer
from rtvi.serving.preprocess import ImageGeometry
from rtvi.serving.tasks.classification import ClassificationTask

log = logging.getLogger("rtvi.serve")


@dataclass
class ServedModel:
    """One served model. ``engine`` and the rest are set once it is loaded and warm."""

    name: str
    location: str  # a model directory or a torchvision architecture name
    max_batch_size: int
    source: ModelSource | None = None
    plan: ExecutionPlan | None = None
    engine: Engine | None = None
    task: ClassificationTask | None = None
    geometry: ImageGeometry | None = None
    normalizer: Normalizer | None = None
    batcher: DynamicBatcher | None = None
    compute_pool: ThreadPoolExecutor | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One batch on the calling compute thread: uint8 image crops are normalized here,
        once per batch, into the thread's reused buffer; float rows are already normalized."""
        assert self.engine is not None and self.normalizer is not None
        if batch.dtype == np.uint8:
            batch = self.normalizer.images_reused(batch)
        return self.engine.run(batch)

    def start_batching(self, queue_delay_s: float, on_batch: Callable[[BatchStats], None]) -> None:
        """Compute threads (one per instance) and the dynamic batcher feeding them: the model is ready."""
        assert self.plan is not None
        self.compute_pool = ThreadPoolExecutor(self.plan.instances, thread_name_prefix=f"rtvi-{self.name}")
        self.batcher = DynamicBatcher(self.run, self.compute_pool, self.max_batch_size, queue_delay_s,
                                      on_batch=on_batch, concurrency=self.plan.instances)
        self.batcher.start()


def planned_models(config: ServerConfig) -> dict[str, str]:
    """v2 name -> model location, before anything is loaded."""
    if config.model_repository:
        return {name: str(path) for name, path in repository_entries(Path(config.model_repository)).items()}
    return {config.served_name: config.model}


def load_model(model: ServedModel, config: ServerConfig) -> float:
    """Load ``model`` (on a loader thread: rtvi.serving.loader) and record how it runs; return the seconds taken."""
    started = time.perf_counter()
    loaded = loader.load(model.name, model.location, config)
    source, engine, plan = loaded.source, loaded.engine, loaded.engine.plan
    model.source, model.plan, model.engine, model.normalizer = source, plan, engine, loaded.normalizer
    model.task = ClassificationTask(source.labels)
    model.geometry = ImageGeometry(
        resize=source.preprocessing.resize, crop=source.preprocessing.crop, fast_decode=config.fast_decode,
        max_pixels=config.max_image_pixels,
    )
    model.parameters = {
        "engine": plan.engine, "device": plan.device, "precision": plan.precision,
        "instances": str(plan.instances), "threads": str(plan.threads), "source": source.format,
        "artifact": source.artifact, "engine_choice": loaded.choice,
    }
    if loaded.trial is not None:
        model.parameters["engine_trial"] = loaded.trial.label()
        for name, rate in loaded.trial.figures.items():
            metrics.ENGINE_TRIAL.labels(model.name, name).set(rate)
    if loaded.check is not None:
        check = loaded.check
        model.parameters.update({
            "check_agreement": f"{check.agreement:.4f}", "check_min_agreement": f"{check.min_agreement:g}",
            "check_images": str(check.images), "check_passed": str(check.passed).lower(),
            "check_cpu": cpu_info().describe()})
        metrics.CHECK_AGREEMENT.labels(model.name).set(check.agreement)
    return time.perf_counter() - started


class ModelRepository:
    """Every model this server serves, by v2 name."""

    def __init__(self, config: ServerConfig, models: dict[str, ServedModel] | None = None) -> None:
        """The models ``config`` names; or ``models`` as they are (in-process tests serve a dummy engine)."""
        self.config = config
        self.models = models if models is not None else {
            name: ServedModel(name, location, config.max_batch_size)
            for name, location in planned_models(config).items()
        }

    def get(self, name: str, version: str = "") -> ServedModel:
        model = self.models.get(name)
        if model is None or version not in ("", "1"):
            raise ModelNotFound(name, version, self.models)
        return model

    def metric_label(self, name: str) -> str:
        """A bounded metrics label: the model's name, or ``unknown`` for names not served."""
        return name if name in self.models else "unknown"

    @property
    def ready(self) -> bool:
        return all(model.ready for model in self.models.values())

    def stalled_seconds(self) -> float:
        return max((m.batcher.stalled_seconds() for m in self.models.values() if m.batcher), default=0.0)

    async def load_all(self, on_batch: Callable[[str, BatchStats], None]) -> None:
        """Load, warm up and start batching every model, one after another."""
        loop = asyncio.get_running_loop()
        for model in self.models.values():
            # One loader thread first: the instance count is known only once planned.
            with ThreadPoolExecutor(1, thread_name_prefix=f"rtvi-load-{model.name}") as loader:
                seconds = await loop.run_in_executor(loader, load_model, model, self.config)
            assert model.plan is not None
            model.start_batching(self.config.max_queue_delay_ms / 1000,
                                 lambda stats, name=model.name: on_batch(name, stats))
            metrics.MODEL_INFO.labels(model.name, model.plan.engine, model.plan.precision, model.plan.device,
                                      str(model.plan.instances), str(model.plan.threads),
                                      model.parameters["engine_choice"], model.parameters.get("engine_trial", "")).set(1)
            log.info("model %s ready in %.1fs (%s, max_batch=%d)", model.name, seconds, model.plan.describe(),
                     model.max_batch_size)

    async def stop(self) -> None:
        for model in self.models.values():
            if model.batcher:
                await model.batcher.stop()
            if model.compute_pool:
                model.compute_pool.shutdown(wait=False, cancel_futures=True)
