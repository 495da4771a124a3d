"""The errors rewardbridge raises on purpose; the CLI turns them into one-line messages.

``ConfigError`` is a mistake in what the user asked for (an option, a recipe key, a
command-line flag): the CLI exits 2. It subclasses ValueError, so plain ``except
ValueError`` code keeps working. ``OptionTypeError`` is also a TypeError (an option of the
wrong type, an unknown option name), like Python's own error for a bad keyword argument.
``InputError`` is bad data (a malformed row, message or file): the CLI exits 1.
``RemoteError`` is a reward endpoint that failed after its retries: the CLI exits 1.
``ScoreError`` is a model that scored NaN or infinity (a local model; an endpoint's is a RemoteError).
"""

from __future__ import annotations

import os
import sys
import warnings


class RewardBridgeError(Exception):
    """Base of every error rewardbridge raises on purpose."""


class ConfigError(RewardBridgeError, ValueError):
    """A bad option, recipe key or flag: names the input, the limit, and the option that changes it."""


class OptionTypeError(ConfigError, TypeError):
    """An option of the wrong type, or an unknown option name."""


class InputError(RewardBridgeError, ValueError):
    """Malformed data: a row, a message, a file."""


class ScoreError(RewardBridgeError, RuntimeError):
    """A reward model gave a score that is not a finite number (NaN, +-inf): a failure, never a reward.

    ``samples``: the indices (in the call that scored them) of the samples whose score failed, so a job
    can name their rows; ``reason``: what failed, without naming a sample (``rewardbridge score`` names
    the row's line instead).
    """

    def __init__(self, message: str, samples: list[int] | None = None, reason: str | None = None):
        super().__init__(message)
        self.samples, self.reason = samples, reason


class RemoteError(RewardBridgeError, RuntimeError):
    """A remote reward endpoint failed after its retries (names the endpoint, status and sample)."""


class RewardBridgeWarning(UserWarning):
    """A legal but suspicious set-up (every group a singleton, truncated inputs)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[Warning] = RewardBridgeWarning) -> None:
    """``warnings.warn`` pointing at the first caller outside rewardbridge (the user's line, or
    the trainer's), however deep inside the package the warning was found."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is warn()'s caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
