"""A stand-in for the Redpanda operator chart, built at test time from the real chart's data.

The operator chart (`operator` 26.2.1 from https://charts.redpanda.com) cannot be fetched
here. A stub without the real values schema once let the rtvi chart pass
`operator.enabled`, which the real chart rejects (its schema has
`additionalProperties: false`); and a stub without the real way of installing CRDs hid
that its CRDs arrive through a pre-install hook, too late for custom resources in the
same release. This stub reproduces both, from ../shared/redpanda:

- values.yaml and values.schema.json are the real chart's, so `helm template`/`install`
  reject exactly the values the real chart rejects;
- crds="hook" (the real chart's behaviour): with `crds.enabled` (or `crds.experimental`)
  the CRDs are pre-install hook objects. Upstream's hook is a Job that applies them; here
  the CRDs themselves are the hook objects, so `helm template` shows which kinds the
  hook installs, and a real API server gets them without a kubelet to run a Job;
- crds="folder": a hook-free variant with the same CRDs in crds/, which Helm applies
  before anything else on install and never upgrades or deletes (`crds.enabled` then
  changes nothing). For an API-server harness that wants the CRDs in place up front.

It always renders the operator Deployment, named as the real chart names it
(`redpanda-controller-operator` for release `redpanda-controller`), so
`helm install --wait` has something to roll out. The CRDs are the operator's own Topic
CRD and a minimal Redpanda CRD written for this stub (redpanda-crd.yaml: real group,
names and version, spec preserved), since the real Redpanda CRD is not in
../shared/redpanda.

Use, e.g. for the README's first install step against a test API server:

    from support.stub_operator import build_stub_operator
    chart = build_stub_operator(tmp_path / "operator")              # or crds="folder"
    helm upgrade --install redpanda-controller <chart> --namespace redpanda-system \\
        --create-namespace --set crds.enabled=true --wait
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import yaml

HERE = Path(__file__).resolve().parent
REDPANDA_DATA = HERE.parents[3] / "shared" / "redpanda"
# The operator chart the README and skaffold.yaml install: name, repository and version.
CHART_NAME = "operator"
CHART_REPOSITORY = "https://charts.redpanda.com"
CHART_VERSION = yaml.safe_load((HERE / "chart" / "Chart.yaml").read_text())["version"]
TOPIC_CRD = REDPANDA_DATA / "cluster.redpanda.com_topics.yaml"
REDPANDA_CRD = HERE / "redpanda-crd.yaml"


def crd_documents() -> list[dict]:
    """The CRDs the stub installs: Redpanda (minimal stand-in) and Topic (the operator's)."""
    return [yaml.safe_load(path.read_text()) for path in (REDPANDA_CRD, TOPIC_CRD)]


def build_stub_operator(dest: Path, crds: Literal["hook", "folder"] = "hook") -> Path:
    """Write the stub chart into `dest` (created; must not exist) and return it."""
    if crds not in ("hook", "folder"):
        raise ValueError(f"crds must be 'hook' or 'folder', not {crds!r}")
    shutil.copytree(HERE / "chart", dest)
    shutil.copy(REDPANDA_DATA / "operator-chart-values.yaml", dest / "values.yaml")
    schema = json.loads((REDPANDA_DATA / "operator-chart-values.schema.json").read_text())
    (dest / "values.schema.json").write_text(json.dumps(schema))
    folder = dest / ("crd-files" if crds == "hook" else "crds")
    folder.mkdir()
    for path in (REDPANDA_CRD, TOPIC_CRD):
        shutil.copy(path, folder / path.name)
    return dest
