"""The studio's version, written into every PNG's `parameters` (`Version: series-studio X`)."""

__version__ = "0.1.0"
