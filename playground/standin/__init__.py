"""A local stand-in for Discord's API and gateway that an unmodified discord.py bot connects to."""

from playground.standin.clock import ManualClock
from playground.standin.config import StandInConfig
from playground.standin.server import StandIn

__all__ = ["ManualClock", "StandIn", "StandInConfig"]
