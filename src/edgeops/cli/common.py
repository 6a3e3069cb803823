"""What every command shares: one-line errors, config loading, the broker URL rule, JSON output."""

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from edge_agent.protocol import ProtocolError

from ..config import ProjectConfig, load_config
from ..errors import EdgeopsError, one_line

EXIT_ERROR = 1
EXIT_REJECTED = 3
"""A release that failed its gates: registered as rejected, so not an error of the tool, but not a success."""

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project config file (default: ./edgeops.yaml when present).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def fail(exc: BaseException | str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``edgeops: <one line>`` on stderr and exit with ``code`` (no traceback)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    typer.echo(f"edgeops: {one_line(text)}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (edgeops, protocol, file system) into ``fail``."""
    try:
        yield
    except (EdgeopsError, ProtocolError, OSError) as exc:
        fail(exc)


def load_project_config(config: Path | None = None, overrides: Mapping[str, Any] | None = None) -> ProjectConfig:
    with user_errors():
        return load_config(config, overrides)


def broker_url(flag: str | None, cfg: ProjectConfig) -> str:
    """The broker to use: the command-line flag, else $EDGEOPS_MQTT_URL, else the config's mqtt.url."""
    return flag or os.environ.get("EDGEOPS_MQTT_URL") or cfg.mqtt.url


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
