"""``edgeops-agent``: run the agent, or make one offline prediction with the installed model.

argparse, not Typer: the device install carries no dependency beyond the agent's four. Every failure a user
can cause prints one line ``edgeops-agent: ...`` and exits 2; the agent itself logs to stderr (journald).

    edgeops-agent run --device-id press-17 --broker mqtt://broker:1883 --data-dir /var/lib/edgeops-agent \\
        --public-key /etc/edgeops-agent/release.pub --label site=berlin --http 127.0.0.1:8765
    edgeops-agent predict --data-dir /var/lib/edgeops-agent --public-key release.pub --json '{"x": 1}'
"""

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .config import AgentConfig, load_agent_config
from .errors import AgentError, ConfigError
from .protocol import ProtocolError, parse_label
from .shutdown import StopSignals

PROG = "edgeops-agent"
PASSWORD_ENV = "EDGEOPS_AGENT_PASSWORD"
log = logging.getLogger("edge_agent")


class UsageError(Exception):
    """A command-line mistake; reported like every other error, in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the whole usage block
        raise UsageError(f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The edgeops edge agent: follows its desired model over MQTT, "
                     "serves ONNX inference locally, reports telemetry.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT (flags override --config)")
    run.add_argument("--config", type=Path, help="agent TOML file (see deployments/agent.example.toml)")
    run.add_argument("--device-id", help="this device's id (also its MQTT username by convention)")
    run.add_argument("--broker", dest="broker_url", help="mqtt://host:port or mqtts://host:port")
    run.add_argument("--data-dir", type=Path, help="models, state and telemetry outbox live here")
    run.add_argument("--public-key", dest="public_keys", type=Path, action="append",
                     help="Ed25519 public key (PEM) trusted for releases; repeatable")
    run.add_argument("--label", dest="labels", action="append", default=[], help="key=value; repeatable")
    run.add_argument("--http", help="serve local inference on host:port, e.g. 127.0.0.1:8765")
    run.add_argument("--topic-prefix", help="MQTT topic prefix (default edgeops)")
    run.add_argument("--username", help=f"MQTT username (password from ${PASSWORD_ENV} or the config)")
    run.add_argument("--ca-file", type=Path, help="CA certificate for mqtts://")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    predict = sub.add_parser("predict", help="one offline prediction with the installed model (no broker)")
    predict.add_argument("--config", type=Path, help="agent TOML file (for data_dir and public_keys)")
    predict.add_argument("--data-dir", type=Path)
    predict.add_argument("--public-key", dest="public_keys", type=Path, action="append")
    predict.add_argument("--json", dest="record", required=True,
                         help="a JSON object (one row) or an array of objects; '-' reads stdin")
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """TOML first, then every flag that was given; labels from flags are merged over the file's."""
    overrides: dict[str, Any] = {key: getattr(args, key) for key in (
        "device_id", "broker_url", "data_dir", "public_keys", "http", "topic_prefix", "username", "ca_file")}
    overrides["password"] = os.environ.get(PASSWORD_ENV) or None
    config = load_agent_config(args.config, overrides)
    if args.labels:
        try:
            flags = dict(parse_label(text) for text in args.labels)
        except ProtocolError as exc:
            raise ConfigError(str(exc)) from exc
        config = dataclasses.replace(config, labels={**config.labels, **flags})
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .agent import Agent  # imported here so `--help` and `predict` stay quick

    # Caught from before the start (a SIGTERM during start-up is kept) until after the clean stop (a second
    # one cannot cut it short). No Event.set() in a handler: see shutdown.py for the hang that caused.
    with StopSignals() as signals:
        agent = Agent(config)
        agent.start()
        address = agent.http_address
        log.info("agent %s %s started: broker %s%s", config.device_id, __version__, config.broker_url,
                 f", HTTP on {address[0]}:{address[1]}" if address else "")
        try:
            signum = signals.wait()
            log.info("stopping on %s: publishing offline status", signal.Signals(signum).name)
        finally:
            agent.stop(clean=True)
    return 0


def _read_record(text: str) -> Any:
    raw = sys.stdin.read() if text == "-" else text
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--json: not valid JSON ({exc.msg} at position {exc.pos})") from exc
    if not isinstance(record, dict) and not (isinstance(record, list) and all(isinstance(r, dict) for r in record)):
        raise UsageError("--json: expected an object (one row) or an array of objects")
    return record


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import ModelRunner
    from .installer import load_verified
    from .store import ModelStore
    from .verify import KeyRing

    record = _read_record(args.record)
    from_file = None if args.config is None else load_agent_config(
        args.config, {"device_id": "offline-predict", "data_dir": args.data_dir, "public_keys": args.public_keys})
    data_dir = args.data_dir or (from_file.data_dir if from_file else None)
    keys = args.public_keys or (list(from_file.public_keys) if from_file else [])
    max_bytes = from_file.max_artifact_bytes if from_file else AgentConfig.max_artifact_bytes
    if data_dir is None:
        raise UsageError("--data-dir (or --config) is required")
    if not keys:
        raise UsageError("--public-key (or --config with public_keys) is required: the model is verified first")
    if not Path(data_dir).is_dir():
        raise ConfigError(f"data_dir: {data_dir} does not exist")
    store = ModelStore(Path(data_dir))
    ref = store.read_pointer().current
    if ref is None:
        raise AgentError(f"no model is installed in {data_dir}")
    manifest, data = load_verified(store, KeyRing.from_paths(keys), ref, max_bytes)
    runner = ModelRunner(manifest, data)
    payload: Any = runner.predict(record).to_json() if isinstance(record, dict) \
        else [p.to_json() for p in runner.predict_many(record)]
    print(json.dumps({"model": manifest.name, "version": manifest.version, "prediction": payload}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return cmd_run(args) if args.command == "run" else cmd_predict(args)
    except (UsageError, AgentError, ProtocolError) as exc:
        print(f"{PROG}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the HTTP port is taken, the data dir is not writable
        print(f"{PROG}: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
