"""The ``edgeops`` command line.

This module imports only the standard library: the console script must be able to say "install the control
extra" on a machine that has just the agent's dependencies, so Typer and every command module are imported
inside ``main()`` after that check.

Command groups are registered in ``SUBCOMMANDS``, one line each: ``(name, "module", "summary")`` for a module
exposing ``app = typer.Typer(...)`` (the summary is the group's help), or ``(name, "module:function",
"summary")`` for a single top-level command (its docstring is its help). ``edgeops --help`` lists the
summaries without importing any command module (a line without a summary is imported to be listed); a
command's module is imported only when that command runs (cli/lazy.py), and each imports the heavy libraries
(Prefect, scikit-learn, pandas, scipy, SQLAlchemy) inside the functions that use them
(tests/unit/test_cli_fast.py holds them to it).
"""

import importlib
import importlib.util
import os
import sys
from typing import Any, ClassVar

CONTROL_EXTRA_MESSAGE = "edgeops: the control plane needs extra dependencies: pip install 'edgeops[control]'"
CONTROL_MODULES: tuple[str, ...] = ("typer", "prefect", "sklearn", "pandas", "skl2onnx", "yaml")
EXIT_MISSING_EXTRA = 2

SUBCOMMANDS: list[tuple[str, str, str] | tuple[str, str]] = [
    ("quickstart", "edgeops.cli.quickstart:quickstart", "From nothing to a signed release of a sample model."),
    ("demo", "edgeops.cli.demo:demo", "The whole loop on this machine: ship, drift, retrain, canary."),
    ("up", "edgeops.cli.stack:up", "Start the local control plane in the background."),
    ("down", "edgeops.cli.stack:down", "Stop every process of the local control plane."),
    ("status", "edgeops.cli.stack:status", "What the local control plane runs, where, and whether it answers."),
    ("keys", "edgeops.cli.keys", "Release signing keys (Ed25519)."),
    ("pipeline", "edgeops.cli.pipeline", "Validate, train, gate, export and register a model."),
    ("models", "edgeops.cli.models", "Registered model versions and their aliases."),
    ("release", "edgeops.cli.release", "Publish releases to the broker for devices to fetch."),
    ("fleet", "edgeops.cli.fleet", "The device fleet as the broker sees it."),
    ("rollout", "edgeops.cli.rollout", "Staged rollouts: canary, waves, thresholds, abort and rollback."),
    ("telemetry", "edgeops.cli.telemetry", "Telemetry ingest: MQTT → telemetry store, with Prefect events."),
    ("labels", "edgeops.cli.labels", "Labels (ground truth) for realized accuracy / MAE."),
    ("monitor", "edgeops.cli.monitor", "Drift and health from stored telemetry."),
]
HELP_WIDTH = 120
"""Plain help (when piped) is wrapped at this width instead of Click's 80 columns, which cut command summaries."""


def build_app() -> Any:
    """The Typer app; its commands are built (and their modules imported) when one is run or asked for help."""
    import typer

    from edgeops.cli.lazy import LazyGroup

    class Edgeops(LazyGroup):
        entries: ClassVar[dict[str, tuple[str, str | None]]] = {
            entry[0]: (entry[1], entry[2] if len(entry) == 3 else None) for entry in SUBCOMMANDS}

    piped = sys.stdout is None or not sys.stdout.isatty()
    app = typer.Typer(name="edgeops", cls=Edgeops, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False,
                      context_settings={"max_content_width": HELP_WIDTH, **({"terminal_width": HELP_WIDTH}
                                                                           if piped else {})})

    @app.callback()
    def edgeops() -> None:
        """Train, gate, sign and ship scikit-learn models to edge devices."""

    return app


def _missing_control_extra(exc: ImportError | None = None) -> bool:
    if exc is not None:
        return (exc.name or "").split(".")[0] in CONTROL_MODULES
    for module in CONTROL_MODULES:
        try:
            if importlib.util.find_spec(module) is None:
                return True
        except (ImportError, ValueError):  # ValueError: blocked with sys.modules[name] = None
            return True
    return False


def _plain_help_when_piped() -> None:
    """Help as plain text when stdout is not a terminal: Typer's rich help imports rich's markdown, syntax and
    traceback modules (about 0.1 s, longer than the rest of a light command) for boxes a pipe does not need.
    Typer reads ``TYPER_USE_RICH`` once, at import; the variable is not left for the processes we start, and
    a value the user set wins."""
    if "TYPER_USE_RICH" in os.environ or sys.stdout is None or sys.stdout.isatty() or "typer" in sys.modules:
        return
    os.environ["TYPER_USE_RICH"] = "0"
    try:
        import typer  # noqa: F401
    finally:
        del os.environ["TYPER_USE_RICH"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from edgeops.cli.heap import console_process, long_lived_imports

    console_process()  # first: its atexit handler must run last
    if _missing_control_extra():
        print(CONTROL_EXTRA_MESSAGE, file=sys.stderr)
        raise SystemExit(EXIT_MISSING_EXTRA)
    from edgeops.stack import STATE_FILE

    if STATE_FILE.exists():  # no stack here (most runs): spare every command the state module's import
        from edgeops.stack.state import adopt_stack

        adopt_stack(sys.argv[1:] if argv is None else argv)  # the running stack, unless the user's env says else
    with long_lived_imports():  # Typer, and the app's group
        _plain_help_when_piped()
        app = build_app()
    try:
        app(args=argv, prog_name="edgeops")  # a command's module is imported in here
    except ImportError as exc:
        if not _missing_control_extra(exc):
            raise
        print(CONTROL_EXTRA_MESSAGE, file=sys.stderr)
        raise SystemExit(EXIT_MISSING_EXTRA) from None
