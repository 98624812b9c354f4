"""ai-how: a hyperscaler's ML workflow on one workstation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ai-how")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
