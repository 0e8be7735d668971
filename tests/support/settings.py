"""Settings for a test, parsed from environment variables by the programs' own ``load_settings``: the values a
test names and nothing of the environment pytest runs in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from avoviirscollector.config import Settings, load_settings

if TYPE_CHECKING:
    from tests.gina_double import GinaDouble


def settings_for(base: Path, double: GinaDouble | None = None, **env: object) -> Settings:
    """The settings with ``VIIRS_BASE=base``, ``GINA_URL`` on ``double`` when given, and each keyword as the
    environment variable of that name (``MAILHOST="127.0.0.1:2525"``)."""
    values = {"VIIRS_BASE": str(base)}
    if double is not None:
        values["GINA_URL"] = double.url
    values.update({name: str(value) for name, value in env.items()})
    return load_settings(values)
