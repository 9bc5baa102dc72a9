"""The Subtide pipeline as a library: media in, events out."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.pipeline import Engine, EngineOptions

__all__ = ["Engine", "EngineOptions"]


def __getattr__(name: str) -> object:
    # Lazy, so `import engine.protocol` (all that cloud/ and ui/ need) stays light.
    if name in __all__:
        from engine import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
