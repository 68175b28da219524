"""The root of every error rtvi reports to its user, and what each exit code means.

Every command ends the same way: ``cli.main`` is the one place that turns an
``RtviError`` into one line on stderr (``rtvi <command>: <message>``) and its exit code,
so an exit code means the same whichever command returns it:

====  ================  ===============================================================
code  name              meaning
====  ================  ===============================================================
0     OK                the work was done
1     FAILED            the work ran and (some of) it failed: frames failed, a Job failed,
                        a service stopped early, an int8 model missed its accuracy gate
2     BAD_INPUT         bad input or configuration, found before any work: a flag, a file,
                        a model directory, a camera, credentials or a certificate
3     BOUND_MISSED      the work ran, but missed a bound its user set (``--max-p95-ms``)
4     UNREACHABLE       a dependency did not answer: the broker, the inference server,
                        the Kubernetes API
130   INTERRUPTED       stopped by Ctrl-C before it finished
====  ================  ===============================================================

Each package raises its own subclasses (``ModelLoadError``, ``BrokerUnreachable``, ...),
so callers can catch what they handle and let the rest reach ``cli.main``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    BOUND_MISSED = 3
    UNREACHABLE = 4
    INTERRUPTED = 130


class RtviError(Exception):
    """An error meant for the user as it is: its message is one line saying what to change."""

    exit_code: ExitCode = ExitCode.FAILED


class WorkFailed(RtviError):
    """The work ran and (some of) it failed."""

    exit_code = ExitCode.FAILED


class BadInput(RtviError):
    """Input or configuration the command cannot work with; retrying cannot help."""

    exit_code = ExitCode.BAD_INPUT


class BoundMissed(RtviError):
    """The work ran but missed a bound the user set."""

    exit_code = ExitCode.BOUND_MISSED


class Unreachable(RtviError):
    """A dependency did not answer; the same command may succeed once it does."""

    exit_code = ExitCode.UNREACHABLE
