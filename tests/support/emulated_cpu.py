"""rtvi's own engines on an emulated AVX2-only x86 CPU: no AVX-512 and no VNNI in CPUID.

ONNX Runtime's and OpenVINO's int8 kernels choose their code path from CPUID. Under
``qemu-x86_64 -cpu EPYC-Rome`` (qemu-user: the whole Python process emulated, TCG) they
take the AVX2 path, whose vpmaddubsw saturates as on a real AVX2-only CPU, whichever CPU
runs the tests. That is the CPU kind CI may land on, and where int8 went wrong before.
Emulation is 10-50x slower: small batches only.

The test process calls ``run_engines``; under qemu this file runs as a script:

    python emulated_cpu.py MODEL_DIR CROPS.npy OUT.npz ENGINE...

(uint8 RGB crops as the server makes them; it writes each engine's logits, the check set's
agreement on each, and numpy's CPUID features as the emulated process saw them.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

EMULATED_CPU = "EPYC-Rome"  # AMD Zen 2: AVX2 and FMA, no AVX-512, no VNNI


def qemu() -> str:
    """qemu-user's x86-64 emulator, installed from Debian when missing (CI)."""
    found = shutil.which("qemu-x86_64")
    if found:
        return found
    from support.tools import apt_install

    apt_install(["qemu-user"], "qemu-x86_64 is missing and there is no apt-get to install Debian's qemu-user")
    return shutil.which("qemu-x86_64") or "qemu-x86_64"


def run_engines(model_dir: Path, crops: np.ndarray, engines: tuple[str, ...], workdir: Path,
                timeout: float = 900) -> dict:
    """Each engine's logits of ``crops`` and its check-set agreement, computed on the emulated CPU."""
    inputs, out = workdir / "crops.npy", workdir / "emulated.npz"
    np.save(inputs, crops)
    done = subprocess.run([qemu(), "-cpu", EMULATED_CPU, sys.executable, __file__, str(model_dir), str(inputs), str(out),
                           *engines], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(out) as data:
        result = {name: data[name] for name in data.files if name != "facts"}
        result["facts"] = json.loads(str(data["facts"]))
    return result


def _main(model_dir: str, crops_path: str, out: str, *engines: str) -> None:
    from numpy._core._multiarray_umath import __cpu_features__

    from rtvi.serving.checkset import evaluate, load_checkset
    from rtvi.serving.engines.base import ExecutionPlan
    from rtvi.serving.engines.select import engine_class
    from rtvi.serving.modeldir import load_directory
    from rtvi.serving.normalize import Normalizer

    source = load_directory(Path(model_dir))
    normalizer = Normalizer(source.preprocessing)
    checkset = load_checkset(Path(model_dir), source.preprocessing.crop, len(source.labels))
    facts: dict = {"cpuid": {k: v for k, v in __cpu_features__.items() if v}, "check_agreement": {}}
    logits = {}
    for name in engines:
        engine = engine_class(name)(source, ExecutionPlan(name, "cpu", source.stored_precision, instances=1, threads=1))
        engine.load()
        logits[name] = engine.run(normalizer.images(np.load(crops_path)))
        if checkset is not None:
            facts["check_agreement"][name] = evaluate(checkset, engine.run(normalizer.images(checkset.crops))).agreement
    np.savez(out, facts=json.dumps(facts), **logits)


if __name__ == "__main__":
    _main(*sys.argv[1:])
