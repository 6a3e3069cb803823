"""What every command shares: one-line errors, config loading, the broker URL rule, exit codes, and output that
reads well on a terminal and parses when piped (JSON, tables, plurals).

Every command module imports this one, so it imports only Typer and the standard library at its top.
"""

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer

from edgeops.errors import EdgeopsError, one_line

if TYPE_CHECKING:
    from edgeops.config import MqttConfig, ProjectConfig

EXIT_ERROR = 1
EXIT_USAGE = 2
"""Typer's code for a bad flag or argument; also a missing control extra (edgeops.cli.EXIT_MISSING_EXTRA)."""
EXIT_REJECTED = 3
"""A release that failed its gates, or a rollout that was aborted and rolled back: the tool worked, the
outcome is a "no"."""
EXIT_DRIFT = 5
"""``monitor run --fail-on drift``: a fleet-wide scope drifted."""
EXIT_DEGRADED = 6
"""``monitor run --fail-on degraded``: a fleet-wide scope is degraded; 7 (5 | 6) when both were found."""

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project config file (default: ./edgeops.yaml when present).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
BrokerOption = Annotated[str | None, typer.Option(
    "--broker", help="Broker URL (default: $EDGEOPS_MQTT_URL, else mqtt.url of the config).")]
TargetOption = Annotated[list[str] | None, typer.Option(
    "--target", "-t", help="Label selector k=v; repeat (or comma-separate) to AND several.")]
DbOption = Annotated[str | None, typer.Option(
    "--db", help="Telemetry store URL (sqlite:///... or postgresql+psycopg://...; "
                 "default: telemetry.url of edgeops.yaml).")]
PRESENCE_STYLES = {"online": "green", "offline": "red", "unknown": "dim"}
"""print_table styles for a device's presence (``status``)."""


def fail(exc: BaseException | str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``edgeops: <one line>`` on stderr and exit with ``code`` (no traceback)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    typer.echo(f"edgeops: {one_line(text)}", err=True)
    raise typer.Exit(code)


def warn(text: str) -> None:
    typer.echo(f"edgeops: warning: {one_line(text)}", err=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (edgeops, protocol, file system) into ``fail``."""
    from edge_agent.protocol import ProtocolError

    try:
        yield
    except (EdgeopsError, ProtocolError, OSError) as exc:
        fail(exc)


def load_project_config(config: Path | None = None, overrides: Mapping[str, Any] | None = None) -> "ProjectConfig":
    from edgeops.config import load_config

    with user_errors():
        return load_config(config, overrides)


def has_config_file(config: Path | None) -> bool:
    """Whether a file configures the project (--config, $EDGEOPS_CONFIG, ./edgeops.yaml). Without one, a command
    that needs one section takes that section's defaults instead of building the whole config: its dataclasses
    cost a fast command a noticeable share of its time (tests/unit/test_cli_fast.py)."""
    return config is not None or bool(os.environ.get("EDGEOPS_CONFIG")) or Path("edgeops.yaml").is_file()


def project_mqtt(config: Path | None) -> "MqttConfig":
    """The project's broker section (``mqtt``): the config file's, else the defaults."""
    if has_config_file(config):
        return load_project_config(config).mqtt
    from edgeops.config.rollout import MqttConfig

    return MqttConfig()


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 device``, ``2 devices``, ``0 devices``."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


SHORT_CELL = 32
"""A column whose cells are all this short stays one line wide when the terminal has room; longer ones wrap."""


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
                styles: Mapping[str, str] | None = None) -> None:
    """A table that never cuts a value. On a terminal: rich, as wide as the terminal, long cells wrap, and a
    cell whose whole text is a key of ``styles`` gets that style. Piped: a header line and one tab-separated
    line per row, no title and no markup, so ``cut -f``/``awk -F'\\t'`` read it (the gh CLI's convention)."""
    cells = [["-" if value is None else str(value) for value in row] for row in rows]
    if not sys.stdout.isatty():
        for row in (list(headers), *cells):
            typer.echo("\t".join(" ".join(cell.split()) for cell in row))
        return
    from rich.console import Console
    from rich.table import Column, Table
    from rich.text import Text

    console = Console()
    longest = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    whole: list[int | None] = [n if n <= SHORT_CELL else len(h) for n, h in zip(longest, headers, strict=True)]
    if sum(n or 0 for n in whole) + 3 * len(headers) + 1 > console.width:
        whole = [None] * len(headers)  # no room: every column may wrap (a header too), rich shares the width
    table = Table(*(Column(h, overflow="fold", min_width=w) for h, w in zip(headers, whole, strict=True)),
                  title=title, title_justify="left")
    for row in cells:
        table.add_row(*(Text(cell, style=(styles or {}).get(cell, "")) for cell in row))
    console.print(table, crop=False)  # were rich ever to need more than the width, wrap rather than cut


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress may be drawn: ``stream`` (default stderr) is a terminal. Piped or redirected output
    gets no spinners or bars (a log file full of redraws helps nobody)."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def activity(message: str, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while long work runs (training, a flow run), on a terminal
    only; piped, nothing. Transient: once the work is done, the line is gone and the result is printed."""
    stream = sys.stderr if stream is None else stream
    if not on_terminal(stream):
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(file=stream, force_terminal=True), transient=True) as progress:
        progress.add_task(message, total=None)
        yield
