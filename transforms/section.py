"""The base of every stage's config section: typed, read-only, and strict about its keys.

Each stage module defines its own section beside the code that reads it (``CleanConfig`` in
``clean.py``, ``ScoreConfig`` in ``encoders.py``, ...); the driver (``polycap.pipeline.config``)
composes them into one ``Config`` and reads YAML. A stage never needs the driver to know its
settings, and a section pickles to the workers without it.
"""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Frozen after validation; an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
