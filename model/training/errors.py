"""The error type of `python -m model.training`: bad input that the user can fix."""

from __future__ import annotations

from core.errors import TaleweaverError


class TrainingError(TaleweaverError):
    """A training run cannot start (bad files, an existing output, a base that will not load).

    The message names what is wrong and what to change; the command prints it without a
    traceback and exits with status 2, having written nothing.
    """
