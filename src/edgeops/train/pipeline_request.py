"""What a pipeline run is asked to do, and the checks that can refuse it before any work starts.

Kept apart from pipeline.py, which imports scikit-learn, skl2onnx and scipy: the CLI checks the config, the
signing key and the data file with this module alone, so a wrong target column or an empty file is reported in
about the time pandas takes to import, not after a Prefect server has started (docs/cli.md).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.protocol import ProtocolError, check_name
from edgeops.config import ModelSource, ProjectConfig, load_config
from edgeops.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class PipelineRequest:
    """What to run: the data file, the registry name of the model, and the loaded project config."""

    data: Path
    model: str
    config: ProjectConfig
    source: ModelSource | None = None
    """Where ``data`` came from (a glob, a query), recorded in the release's recipe for retrains; None: the file."""

    @property
    def target(self) -> str:
        assert self.config.data.target is not None  # make_request guarantees it
        return self.config.data.target


def make_request(data: Path, model: str | None = None, target: str | None = None, config_path: Path | None = None,
                 overrides: Mapping[str, Any] | None = None) -> PipelineRequest:
    """Load the config (flags win over edgeops.yaml) and check that a model name and target are known."""
    merged = dict(overrides or {})
    if target is not None:
        merged["data.target"] = target
    if model is not None:
        merged["name"] = model
    cfg = load_config(config_path, merged)
    if cfg.data.target is None:
        raise ConfigError("data.target", "no target column: pass --target or set data.target in edgeops.yaml")
    if cfg.name is None:
        raise ConfigError("name", "no model name: pass --model or set name in edgeops.yaml")
    try:
        check_name(cfg.name, "model")
    except ProtocolError as exc:
        raise ConfigError("name", exc.reason) from None
    return PipelineRequest(data=Path(data), model=cfg.name, config=cfg)


def load_signing_key(cfg: ProjectConfig) -> "Ed25519PrivateKey":
    """Loaded first so that a missing key stops the run before any work or registry write. From $EDGEOPS_SIGNING_KEY,
    a Prefect Secret block or the key file (edgeops.credentials), imported here so a bad input costs no import."""
    from edgeops.credentials import signing_key

    return signing_key(cfg)


def check_data(request: PipelineRequest) -> None:
    """The data file exists, parses as a table with rows, and holds the target column; else a DataError naming
    the file or the column (with the columns it does have). Everything else about the data is validation's
    job, which reports it with its findings in the run's artifacts."""
    from edgeops.train.data import describe_columns, load_table

    df = load_table(request.data)
    if request.target not in df.columns:
        raise DataError(f"target column {request.target!r} is not in the data (columns: {describe_columns(df)})",
                        path=request.data, column=request.target)
