"""Reference harness for annotation-free pathology localization (AFLoc and its peers)."""

__version__ = "0.1.0"
