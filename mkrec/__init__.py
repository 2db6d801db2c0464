"""mkrec — bare-metal disaster recovery for Linux."""

__version__ = "0.1.0"
