"""The fleet: cameras from ``--camera NAME=URL`` flags and a YAML cameras file.

The file is a list of cameras::

    - name: gate                    # the Kafka key and the metrics' camera label
      url: rtsp://viewer:${GATE_PASSWORD}@10.0.0.5:554/stream1
      fps: 5                        # optional: frames published per second (default --fps)
      resize: 640x480               # optional: published size (default --resize, else the camera's)
      roi: [100, 50, 400, 300]      # optional: publish only this region, x, y, width, height

``${VAR}`` in a URL is the environment variable VAR (a Kubernetes Secret's key, so no
password sits in the file), ``$$`` a literal ``$``. A camera is checked completely when
the file is read, so a mistake is one line naming the camera, before anything starts
(and, on a reload, before anything changes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rtvi.errors import BadInput
from rtvi.settings import ConfigError, parse_size
from rtvi.streaming.producer.sources.redact import redact
from rtvi.streaming.producer.sources.url import url_problem

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")
KEYS = ("name", "url", "fps", "resize", "roi")


class CamerasError(BadInput):
    """A camera's description cannot work: the message names the file and the camera."""


@dataclass(frozen=True)
class Defaults:
    """What a camera that does not say gets (from --fps and --resize)."""

    fps: float = 5.0
    resize: tuple[int, int] | None = None


@dataclass(frozen=True)
class Camera:
    name: str
    url: str = field(repr=False)  # may hold a password: shown only through ``shown_url``
    fps: float = 5.0
    resize: tuple[int, int] | None = None
    roi: tuple[int, int, int, int] | None = None

    @property
    def shown_url(self) -> str:
        return redact(self.url)


def expand(text: str, environ: Mapping[str, str]) -> str:
    """``${VAR}`` -> the variable's value, ``$$`` -> ``$``; a variable that is not set is an error."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in environ:
            raise CamerasError(f"${{{name}}} is not set in the environment")
        return environ[name]

    return _VARIABLE.sub(value, text)


def camera_from(entry: Any, defaults: Defaults, environ: Mapping[str, str]) -> Camera:
    """One camera from a cameras-file entry (a mapping), checked; CamerasError says what is wrong."""
    if not isinstance(entry, Mapping):
        raise CamerasError(f"expected a mapping with name and url, got {type(entry).__name__}")
    unknown = set(entry) - set(KEYS)
    if unknown:
        raise CamerasError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise CamerasError(f"name {name!r} must be 1-63 letters, digits, '.', '_' or '-' (it is the Kafka key "
                           "and a metric label)")
    try:
        return Camera(name=name, url=_url(entry.get("url"), environ), fps=_fps(entry.get("fps", defaults.fps)),
                      resize=_resize(entry.get("resize"), defaults.resize), roi=_roi(entry.get("roi")))
    except CamerasError as exc:
        raise CamerasError(f"camera {name!r}: {exc}") from None


def _url(url: Any, environ: Mapping[str, str]) -> str:
    if not isinstance(url, str) or not url:
        raise CamerasError("url is missing")
    url = expand(url, environ)
    problem = url_problem(url)
    if problem:
        raise CamerasError(f"url {problem}")
    return url


def _fps(fps: Any) -> float:
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 120:
        raise CamerasError(f"fps must be a number in (0, 120], got {fps!r}")
    return float(fps)


def _resize(resize: Any, default: tuple[int, int] | None) -> tuple[int, int] | None:
    if resize is None:
        return default
    try:
        return parse_size(str(resize))
    except ConfigError as exc:
        raise CamerasError(f"resize: {exc}") from None


def _roi(roi: Any) -> tuple[int, int, int, int] | None:
    if roi is None:
        return None
    if not (isinstance(roi, list | tuple) and len(roi) == 4 and all(type(v) is int for v in roi)) \
            or min(roi[:2]) < 0 or min(roi[2:]) <= 0:
        raise CamerasError(f"roi must be [x, y, width, height] in pixels, x and y >= 0, width and height > 0; "
                           f"got {roi!r}")
    return tuple(roi)


def parse_flag(text: str, defaults: Defaults, environ: Mapping[str, str]) -> Camera:
    """``NAME=URL`` (``--camera``)."""
    name, sep, url = text.partition("=")
    if not sep:
        raise CamerasError(f"--camera {redact(text)!r}: expected NAME=URL")
    try:
        return camera_from({"name": name, "url": url}, defaults, environ)
    except CamerasError as exc:
        raise CamerasError(f"--camera: {exc}") from None


def parse_file(text: str, where: str, defaults: Defaults, environ: Mapping[str, str]) -> list[Camera]:
    """The cameras of a cameras file's text (``where`` names it in errors)."""
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise CamerasError(f"{where}: not valid YAML{at}") from None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise CamerasError(f"{where}: expected a list of cameras (- name: ..., url: ...)")
    cameras = []
    for number, entry in enumerate(entries, 1):
        try:
            cameras.append(camera_from(entry, defaults, environ))
        except CamerasError as exc:
            raise CamerasError(f"{where}: entry {number}: {exc}") from None
    return cameras


def check_unique(cameras: Sequence[Camera]) -> None:
    seen: set[str] = set()
    for camera in cameras:
        if camera.name in seen:
            raise CamerasError(f"camera name {camera.name!r} is used twice: names must be unique")
        seen.add(camera.name)


class CamerasFile:
    """The cameras file, parsed again only when its bytes change (a ConfigMap update)."""

    def __init__(self, path: str, defaults: Defaults, environ: Mapping[str, str]) -> None:
        self.path, self.defaults, self.environ = Path(path), defaults, environ
        self._digest: str | None = None

    def read(self) -> list[Camera]:
        """The file's cameras (CamerasError if it cannot be read or is wrong). Contents that were
        wrong count as read too: they are reported once, not at every check until fixed."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise CamerasError(f"cannot read the cameras file {str(self.path)!r}: {exc.strerror or exc}") from None
        self._digest = hashlib.sha256(data).hexdigest()
        return parse_file(data.decode("utf-8", errors="replace"), str(self.path), self.defaults, self.environ)

    def changed(self) -> bool:
        """Whether the file's bytes differ from those last read (an unreadable file has not changed:
        it is reported when it is read)."""
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest() != self._digest
        except OSError:
            return False


@dataclass(frozen=True)
class Plan:
    """What a new list of cameras asks of the running fleet."""

    start: tuple[Camera, ...] = ()
    stop: tuple[str, ...] = ()
    restart: tuple[Camera, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.start or self.stop or self.restart)


def plan(running: Mapping[str, Camera], wanted: Sequence[Camera]) -> Plan:
    """Cameras to start (new names), stop (gone) and restart (changed); the rest are untouched."""
    by_name = {camera.name: camera for camera in wanted}
    return Plan(
        start=tuple(c for c in wanted if c.name not in running),
        stop=tuple(name for name in running if name not in by_name),
        restart=tuple(c for c in wanted if c.name in running and running[c.name] != c),
    )
