"""Progress on long work (issue 17): a spinner with the elapsed time on a terminal, nothing when piped; the
rollout's live bar is chosen by the terminal too, not by ``--wait``."""

import io

import typer
from typer.testing import CliRunner

from edgeops.cli.common import activity, on_terminal
from edgeops.cli.rollout import WaitOption


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_spinner_with_what_runs() -> None:
    stream = Terminal()
    with activity("training churn on churn.csv", stream):
        pass
    assert "training churn on churn.csv" in stream.getvalue()
    assert on_terminal(stream)


def test_a_pipe_sees_nothing() -> None:
    stream = io.StringIO()
    with activity("training churn on churn.csv", stream):
        pass
    assert stream.getvalue() == ""
    assert not on_terminal(stream)


def test_wait_is_accepted_but_no_longer_offered() -> None:
    app = typer.Typer()

    @app.command()
    def start(wait: WaitOption = False) -> None:
        typer.echo(f"wait={wait}")

    runner = CliRunner()
    assert runner.invoke(app, ["--wait"]).output == "wait=True\n"  # old scripts keep working
    assert "--wait" not in runner.invoke(app, ["--help"]).output
