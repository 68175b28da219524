"""Typed service configuration read from command-line flags and ``RTVI_*`` variables.

Every service describes its settings once, as a frozen dataclass whose fields carry
their help text. The same description renders the argparse flags (``--max-batch-size``)
and the environment variable names (``RTVI_MAX_BATCH_SIZE``) that the Helm chart sets,
so a flag and its variable can never drift apart. Precedence: flag, then environment,
then the field default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from rtvi.errors import BadInput

ENV_PREFIX = "RTVI_"

T = TypeVar("T")


class ConfigError(BadInput, ValueError):
    """A setting has a value the service cannot run with (`rtvi` prints the usage with it)."""


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a dataclass field as a setting with its help text.

    A ``secret`` one (a password, a key, a URL with credentials) is left out of the dataclass's
    repr, so a logged config never shows it, and out of ``to_argv``, since a command line is
    visible to every user of the machine: it travels in the environment instead
    (``secret_environment``). A ``tuple[str, ...]`` setting is a repeatable flag; its variable
    holds the values separated by whitespace.
    """
    return dataclasses.field(
        default=default, repr=not secret,
        metadata={"help": help, "choices": choices, "metavar": metavar, "secret": secret},
    )


def setting_of(config_cls: type, name: str, *, default: Any = dataclasses.MISSING) -> Any:
    """Another service's setting ``name``, as declared there (help, choices, metavar), with this
    command's own default: `rtvi up` offers some of its services' settings without declaring them
    again, and passes them on to those services' configs."""
    field = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    meta = field.metadata
    return setting(field.default if default is dataclasses.MISSING else default, meta["help"],
                   choices=meta["choices"], metavar=meta["metavar"], secret=meta["secret"])


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _base_type(annotation: Any) -> type:
    """The concrete type of ``int``, ``str | None`` and the like."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return origin or annotation


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _converter(annotation: Any):
    base = _base_type(annotation)
    if base is tuple:
        return lambda text: tuple(text.split())
    return _parse_bool if base is bool else base


class _FromEnvironment(str):
    """A setting's raw text from its ``RTVI_*`` variable. argparse converts a string default
    only for the command being run, so a variable meant for one command (``RTVI_RESIZE=640x480``
    for `rtvi ingest`) never breaks the parser of another that reads it differently (`rtvi
    export --resize` takes a number): every subcommand's parser is built at each start."""


def _typed(convert, env: str):
    """``convert`` whose error, for a value that came from ``env``, names the variable."""
    def parse(text: str):
        try:
            return convert(text)
        except ValueError as exc:
            if isinstance(text, _FromEnvironment):
                raise argparse.ArgumentTypeError(f"{env}={str(text)!r}: {exc}") from None
            raise

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


class _Repeat(argparse.Action):
    """A repeatable flag collecting a tuple: its first use replaces the default (from the
    environment or the field), so flags win over the environment as everywhere else."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, (() if current is self.default else current) + (values,))


def _fields(cls: type) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    for f in fields:
        f.type = hints[f.name]
    return list(fields)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, environ: Mapping[str, str] | None = None
) -> None:
    """Add one flag per setting of ``cls``; defaults come from the environment (converted
    when the command runs: see ``_FromEnvironment``)."""
    environ = os.environ if environ is None else environ
    for f in _fields(cls):
        convert = _converter(f.type)
        default = f.default
        env = env_name(f.name)
        if env in environ and _base_type(f.type) in (bool, tuple):
            try:
                default = convert(environ[env])
            except ValueError as exc:
                parser.error(f"{env}={environ[env]!r}: {exc}")
        elif env in environ:
            default = _FromEnvironment(environ[env])
        meta = f.metadata
        shown = "unset" if f.default is None else f.default
        help_text = f"{meta['help']} [env {env}; default: {shown}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if _base_type(f.type) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif _base_type(f.type) is tuple:
            kwargs["action"] = _Repeat
            kwargs["metavar"] = meta.get("metavar") or f.name.upper()
        else:
            kwargs["type"] = _typed(convert, env)
            kwargs["metavar"] = meta.get("metavar") or f.name.upper()
        parser.add_argument(flag_name(f.name), **kwargs)


def from_namespace(cls: type[T], namespace: argparse.Namespace) -> T:
    """Build the config from parsed flags; ``__post_init__`` validates it."""
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})


def to_argv(config: Any) -> list[str]:
    """The flags that parse back into ``config``: the inverse of ``from_namespace``.

    One flag per setting that differs from its default (run the command with no ``RTVI_*``
    variables of its own, so defaults are defaults); secret settings are left out (see
    ``secret_environment``). `rtvi up` starts its services from typed configs with this, so a
    service's flag is declared once, in its config.
    """
    argv: list[str] = []
    for f in _fields(type(config)):
        value = getattr(config, f.name)
        if f.metadata.get("secret") or value == f.default:
            continue
        if _base_type(f.type) is bool:
            argv.append(flag_name(f.name) if value else "--no-" + flag_name(f.name)[2:])
        elif _base_type(f.type) is tuple:
            argv += [arg for item in value for arg in (flag_name(f.name), str(item))]
        else:
            argv += [flag_name(f.name), str(value)]
    return argv


def _env_text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def secret_environment(config: Any) -> dict[str, str]:
    """``RTVI_*`` variables for the secret settings ``to_argv`` leaves out (the set ones)."""
    return {env_name(f.name): _env_text(getattr(config, f.name)) for f in _fields(type(config))
            if f.metadata.get("secret") and getattr(config, f.name)}


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``640x480``) into ``(width, height)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ConfigError(f"size must be positive, got {text!r}")
    return width, height


def require(condition: bool, message: str) -> None:
    """Raise ConfigError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
