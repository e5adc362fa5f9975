"""analysis: judging and showing (separation metrics, dose-response, figures)."""

from .separation import separation

__all__ = ["separation"]
