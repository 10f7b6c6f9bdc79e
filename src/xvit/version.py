"""The package version, in a leaf module so that the library can record it without importing ``xvit`` itself."""

__version__ = "0.1.0"
