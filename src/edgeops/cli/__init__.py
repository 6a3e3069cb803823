"""The ``edgeops`` command line.

This module imports only the standard library: the console script must be able to say "install the control
extra" on a machine that has just the agent's dependencies, so Typer and every command module are imported
inside ``main()`` after that check.

Command groups are registered in ``SUBCOMMANDS``, one line each: ``(name, "module")`` for a module exposing
``app = typer.Typer(...)``, or ``(name, "module:function")`` for a single top-level command.
"""

import importlib
import importlib.util
import sys
from typing import Any

CONTROL_EXTRA_MESSAGE = "edgeops: the control plane needs extra dependencies: pip install 'edgeops[control]'"
CONTROL_MODULES: tuple[str, ...] = ("typer", "prefect", "sklearn", "pandas", "skl2onnx", "yaml")
EXIT_MISSING_EXTRA = 2

SUBCOMMANDS: list[tuple[str, str]] = [
    ("keys", "edgeops.cli.keys"),
    ("pipeline", "edgeops.cli.pipeline"),
    ("models", "edgeops.cli.models"),
    ("quickstart", "edgeops.cli.quickstart:quickstart"),
    ("release", "edgeops.cli.release"),
    ("fleet", "edgeops.cli.fleet"),
    ("rollout", "edgeops.cli.rollout"),
    ("telemetry", "edgeops.cli.telemetry"),
    ("monitor", "edgeops.cli.monitor"),
    ("labels", "edgeops.cli.labels"),
    ("demo", "edgeops.cli.demo:demo"),
    ("up", "edgeops.cli.stack:up"),
    ("down", "edgeops.cli.stack:down"),
    ("status", "edgeops.cli.stack:status"),
]


def build_app() -> Any:
    """Assemble the Typer app from SUBCOMMANDS (imports Typer and every command module)."""
    import typer

    app = typer.Typer(name="edgeops", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="Train, gate, sign and ship scikit-learn models to edge devices.")
    for name, target in SUBCOMMANDS:
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        if attr:
            app.command(name)(getattr(module, attr))
        else:
            app.add_typer(module.app, name=name)
    return app


def __getattr__(name: str) -> Any:
    """``edgeops.cli.app`` is built on first access, so importing this package needs no third-party module."""
    if name == "app":
        app = build_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if _missing_control_extra():
        print(CONTROL_EXTRA_MESSAGE, file=sys.stderr)
        raise SystemExit(EXIT_MISSING_EXTRA)
    from edgeops.stack.state import adopt_stack

    adopt_stack(sys.argv[1:] if argv is None else argv)  # the project's running stack, unless the user's env says else
    try:
        app = build_app()
    except ImportError as exc:
        if not _missing_control_extra(exc):
            raise
        print(CONTROL_EXTRA_MESSAGE, file=sys.stderr)
        raise SystemExit(EXIT_MISSING_EXTRA) from None
    app(args=argv, prog_name="edgeops")
