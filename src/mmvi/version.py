"""The package version (imports nothing)."""

__version__ = "0.1.0"
