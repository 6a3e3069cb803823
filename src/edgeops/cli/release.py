"""``edgeops release``: put a registered release on the broker (retained) or take it down."""

from typing import TYPE_CHECKING, Annotated

import typer

from edgeops.cli.common import (
    BrokerOption,
    ConfigOption,
    JsonOption,
    load_project_config,
    plural,
    print_json,
    user_errors,
)
from edgeops.cli.fleet import control_client

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edgeops.config import ProjectConfig
    from edgeops.release.publish import PublishResult
    from edgeops.release.registry import ReleaseRecord

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py

RefArgument = Annotated[str, typer.Argument(help="churn@4, churn@champion, or churn.")]


def project_public_key(cfg: "ProjectConfig") -> "Ed25519PublicKey | None":
    """The project's public key, when known (``release.pub``, or derived from the release key wherever
    edgeops.credentials finds it): publishing then checks the signature before anything leaves."""
    from edgeops.credentials import public_key
    from edgeops.errors import SigningError

    try:
        return public_key(cfg)
    except SigningError:
        return None


def publish_record(record: "ReleaseRecord", cfg: "ProjectConfig", broker: str | None,
                   force: bool = False) -> tuple["PublishResult", str]:
    """Publish a registry record (idempotent); returns the result and the broker URL used."""
    from edge_agent.protocol import Topics
    from edgeops.release.publish import publish_release

    client = control_client(broker, cfg.mqtt)
    try:
        result = publish_release(client, Topics(cfg.mqtt.prefix), record.manifest, record.onnx_bytes(),
                                 status=record.status, public_key=project_public_key(cfg), force=force)
    finally:
        client.close()
    return result, client.url


@app.command("publish")
def publish(ref: RefArgument, broker: BrokerOption = None, force: Annotated[bool, typer.Option(
                "--force", help="Send again even when the broker already holds the same bytes.")] = False,
            config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Publish a signed, registered release: the artifact (chunked if large), then the manifest, retained."""
    from edgeops.release.registry import Registry

    cfg = load_project_config(config)
    with user_errors():
        record = Registry.from_config(cfg.registry).resolve(ref)
        result, url = publish_record(record, cfg, broker, force)
    if json_out:
        print_json({"release": result.ref, "broker": url, "messages": result.messages, "bytes": result.bytes,
                    "skipped": result.skipped})
    elif result.skipped:
        typer.echo(f"{result.ref} is already published on {url} (same bytes); nothing sent")
    else:
        typer.echo(f"published {result.ref} on {url}: {plural(result.messages, 'retained message')}, "
                   f"{plural(result.bytes, 'byte')}")


@app.command("unpublish")
def unpublish(ref: Annotated[str, typer.Argument(help="churn@2 (an explicit version).")],
              broker: BrokerOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Clear the retained manifest and artifact of a release. Devices already running it keep it."""
    from edge_agent.protocol import Topics, parse_version
    from edgeops.errors import RegistryError
    from edgeops.release.publish import unpublish_release
    from edgeops.release.registry import is_version_ref, parse_ref

    cfg = load_project_config(config)
    with user_errors():
        model, version_text = parse_ref(ref)
        if version_text is None or not is_version_ref(version_text):
            raise RegistryError(f"unpublish needs an explicit version like {model}@2, got {ref!r}")
        version = parse_version(version_text)
        client = control_client(broker, cfg.mqtt)
        try:
            cleared = unpublish_release(client, Topics(cfg.mqtt.prefix), model, version)
        finally:
            client.close()
    if json_out:
        print_json({"release": f"{model}@{version}", "broker": client.url, "cleared": cleared})
    elif cleared:
        typer.echo(f"unpublished {model}@{version} from {client.url}: cleared {plural(cleared, 'retained message')}")
    else:
        typer.echo(f"{model}@{version} was not published on {client.url}; nothing to clear")


if __name__ == "__main__":
    app()
