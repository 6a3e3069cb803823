"""``edgeops keys``: the Ed25519 key pair that signs releases."""

from pathlib import Path
from typing import Annotated

import typer

from edgeops.cli.common import ConfigOption, JsonOption, load_project_config, print_json, user_errors

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py
DirOption = Annotated[Path | None, typer.Option("--dir", help="Key directory (default: registry.keys_dir).")]


@app.command("init")
def init(force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
         keys_dir: DirOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Create the signing key pair (private key mode 0600). Devices need the public key."""
    from edgeops.release.signing import generate_keys, load_public_key, public_key_id

    directory = keys_dir or load_project_config(config).registry.keys_dir
    with user_errors():
        private, public = generate_keys(directory, force=force)
        kid = public_key_id(load_public_key(public))
    if json_out:
        print_json({"key_id": kid, "private_key": str(private), "public_key": str(public)})
        return
    typer.echo(f"created signing key {kid}\n  private: {private} (keep it secret)\n  public:  {public} "
               "(give it to devices: edgeops-agent --public-key)")


@app.command("show")
def show(keys_dir: DirOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Print the key id and the public key file that devices must trust."""
    from edgeops.release.signing import key_paths, load_public_key, public_key_id

    directory = keys_dir or load_project_config(config).registry.keys_dir
    public = key_paths(directory)[1]
    with user_errors():
        kid = public_key_id(load_public_key(public))
    if json_out:
        print_json({"key_id": kid, "public_key": str(public)})
    else:
        typer.echo(f"{kid}  {public}")
