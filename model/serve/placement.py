"""How many replicas, and what each one reserves: worked out before anything is deployed, so a
request the cluster cannot place is refused at once with its numbers, instead of Serve waiting for
ever for CPUs that are not there. Pure Python: the command line and the tests use it without Ray.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

AUTO = "auto"
RANGE = re.compile(r"(?P<low>[0-9]+)(?:-(?P<high>[0-9]+))?")
CPU_STEP = 0.01
"""Shares of a CPU are given in hundredths, rounded down, so the replicas' sum never passes the total."""


class PlacementError(Exception):
    """A request the cluster cannot place; the message names the numbers and what would fit."""


@dataclass(frozen=True)
class Replicas:
    """A fixed number of replicas (`minimum == maximum`), or a range Serve's autoscaler moves in."""

    minimum: int
    maximum: int

    @classmethod
    def parse(cls, text: str) -> Replicas:
        """`N` or `MIN-MAX` (an argparse `type`): `2` is two replicas, `1-4` one to four as load asks."""
        match = RANGE.fullmatch(text.strip())
        if match is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of replicas (N) or a range (MIN-MAX)")
        low = int(match["low"])
        high = int(match["high"]) if match["high"] is not None else low
        if high < max(low, 1):
            raise argparse.ArgumentTypeError(f"{text!r}: at least one replica, and MIN no more than MAX")
        return cls(low, high)

    @property
    def autoscaled(self) -> bool:
        return self.maximum > self.minimum

    def __str__(self) -> str:
        return f"{self.minimum}-{self.maximum}" if self.autoscaled else str(self.minimum)


def cpus_argument(text: str) -> float | None:
    """`auto` (None) or a positive number of CPUs (an argparse `type`)."""
    if text.strip().lower() == AUTO:
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of CPUs nor {AUTO!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of CPUs is 0 or more")
    return value


def plan_cpus(requested: float | None, cluster: Mapping[str, float], groups: Mapping[str, Replicas]) -> float:
    """The CPUs each replica reserves, checked against the cluster's.

    `auto` (None) shares the cluster's CPUs among the most replicas that may run (every range at
    its maximum), one CPU each at most: two story replicas and one /why replica on two CPUs get
    0.66 each. An explicit share that leaves some of them unplaceable raises `PlacementError`.
    """
    total = float(cluster.get("CPU", 0.0))
    most = sum(group.maximum for group in groups.values())
    if requested is None:
        return min(1.0, math.floor(total / most / CPU_STEP) * CPU_STEP)
    needed = requested * most
    if needed > total + 1e-9:
        fits = math.floor(total / most / CPU_STEP) * CPU_STEP
        counted = " + ".join(f"{group.maximum} {name}" for name, group in groups.items())
        raise PlacementError(
            f"{counted} replicas × {requested:g} CPU each need {needed:g} CPUs, but the cluster has {total:g}. "
            f"Ask for fewer replicas, or --cpus-per-replica {fits:g} (or auto, which fits them)."
        )
    return requested


def check_gpus(requested: float, cluster: Mapping[str, float], groups: Mapping[str, Replicas]) -> None:
    """Refuse GPUs the cluster does not have, naming the numbers (no GPU asked: nothing to check)."""
    if requested <= 0:
        return
    total = float(cluster.get("GPU", 0.0))
    needed = requested * sum(group.minimum for group in groups.values())
    if needed > total + 1e-9:
        raise PlacementError(
            f"the replicas need {needed:g} GPUs to start ({requested:g} each), but the cluster has {total:g}."
        )
