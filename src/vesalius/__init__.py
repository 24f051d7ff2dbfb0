"""Vesalius: an open PACS in Python."""

__version__ = "0.1.0"
