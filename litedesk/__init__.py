"""LiteDesk: self-hosted remote desktop on Twisted."""

__version__ = "0.1.0"
