"""Apply a service's Alembic branch to its database (`second-opinion migrate <service>`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from services.common.settings import SERVICES

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    locations = " ".join(str(MIGRATIONS / "versions" / s) for s in SERVICES)
    config.set_main_option("version_locations", locations)
    config.set_main_option("path_separator", "space")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["service"] = service
    return config


def upgrade(service: str, url: str) -> None:
    command.upgrade(alembic_config(service, url), f"{service}@head")
