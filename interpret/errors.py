"""The errors a user can cause: each carries a message meant to be shown as it is (CLI, app, API)."""


class InterpretError(ValueError):
    """Base class of every error caused by what a user asked for (not by a bug)."""


class ModelLoadError(InterpretError):
    """An unknown model name or tag, an unsupported architecture, or weights that cannot be had."""


class ImageError(InterpretError):
    """An input that is not a usable image."""


class CaptionError(InterpretError):
    """An unusable caption (empty, not text)."""
