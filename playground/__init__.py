"""Taleweaver without Discord: a local stand-in for Discord's API and a web page to use it."""
