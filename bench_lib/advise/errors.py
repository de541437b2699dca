"""The errors of ``advise``: one line each, with the command line's exit code."""

from __future__ import annotations

__all__ = ["EXIT_INPUT", "EXIT_USAGE", "AdviseError", "input_error", "usage_error"]

#: A usage problem (an option's value, a spec that matches nothing): exit 2.
EXIT_USAGE = 2
#: An input that cannot be read or used (not a model, an uncached hub id, a failing factory,
#: a model too big for the device): exit 3.
EXIT_INPUT = 3


class AdviseError(Exception):
    """A one-line problem with ``code`` (:data:`EXIT_USAGE` or :data:`EXIT_INPUT`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> AdviseError:
    return AdviseError(message, EXIT_USAGE)


def input_error(message: str) -> AdviseError:
    return AdviseError(message, EXIT_INPUT)
