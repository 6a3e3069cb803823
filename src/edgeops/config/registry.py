"""Where releases live (edgeops.yaml ``registry``): a local folder or S3-compatible object storage."""

from dataclasses import dataclass, field
from pathlib import Path

ADDRESSING_STYLES: tuple[str, ...] = ("auto", "path", "virtual")


@dataclass(frozen=True)
class S3Config:
    """Where an ``s3://`` registry is served from. Credentials are never here: boto3 finds them where it always
    does (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role), so none lands in a file or a
    flow parameter. AWS_ENDPOINT_URL, when set, wins over ``endpoint_url`` (the environment wins, as for MQTT)."""

    endpoint_url: str | None = None
    """An S3-compatible server (SeaweedFS, MinIO, Ceph): ``http://host:8333``; null for AWS itself."""
    region: str | None = None
    profile: str | None = None
    """A profile of ~/.aws/config and ~/.aws/credentials (null: AWS_PROFILE, else the default chain)."""
    addressing_style: str = "auto"
    """``path`` for servers that do not serve ``bucket.host`` names; ``auto`` lets botocore choose."""


@dataclass(frozen=True)
class RegistryConfig:
    """Where releases and the signing keys live (paths relative to the config file)."""

    root: Path | str = Path(".edgeops/registry")
    """A local folder (a Path), or object storage as an ``s3://bucket/prefix`` URL (kept as text)."""
    keys_dir: Path = Path(".edgeops/keys")
    s3: S3Config = field(default_factory=S3Config)


def is_url(location: Path | str) -> bool:
    """Whether a location is a URL (``s3://...``) rather than a local path; a Path never is."""
    return isinstance(location, str) and "://" in location


__all__ = ["ADDRESSING_STYLES", "RegistryConfig", "S3Config", "is_url"]
