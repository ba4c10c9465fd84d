"""Running Taleweaver for real: the health and metrics endpoint, logging, the event-loop lag probe.

Discord-free and torch-free like `core`: `bot.py` wires these to the bot, the store and the model service.
"""
