import multiprocessing
import os
from pathlib import Path

import pytest
from manifests import fake_manifest

from edge_agent.protocol import (
    ReleaseManifest,
)
from edgeops.errors import RegistryError
from edgeops.registry import Registry, parse_ref
from edgeops.signing import generate_keys, load_private_key, sign_manifest

pytestmark = pytest.mark.unit


def builder(model: str, key_path: Path | None, onnx: bytes = b"model-bytes" * 9):
    """A ``build`` callback as the pipeline passes it: bakes the allocated version in and signs."""

    def build(version: int) -> tuple[ReleaseManifest, bytes]:
        manifest = fake_manifest(model, version, onnx)
        return (manifest if key_path is None else sign_manifest(manifest, load_private_key(key_path))), onnx

    return build


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return generate_keys(tmp_path / "keys")[0]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_versions_are_monotonic_and_blobs_shared(tmp_path: Path, key: Path) -> None:
    reg = Registry(tmp_path / "reg")
    first = reg.register("churn", builder("churn", key), report={"note": "one"}, files={"sample.parquet": b"PAR1"})
    second = reg.register("churn", builder("churn", key))
    assert (first.version, second.version) == (1, 2)
    assert first.onnx_path == second.onnx_path  # same bytes, stored once
    assert second.onnx_bytes() == b"model-bytes" * 9
    assert reg.get("churn", 1).report == {"note": "one"}
    assert reg.get("churn", 1).file("sample.parquet") is not None
    assert reg.get("churn", 2).file("sample.parquet") is None
    assert reg.models() == ["churn"]
    assert [r.version for r in reg.versions("churn")] == [1, 2]
    assert reg.get("churn", "latest").version == 2
    assert reg.register("other", builder("other", key)).version == 1


def test_aliases_resolve_and_rejected_can_never_be_promoted(tmp_path: Path, key: Path) -> None:
    reg = Registry(tmp_path)
    reg.register("churn", builder("churn", key))
    rejected = reg.register("churn", builder("churn", None), status="rejected",
                            report={"reasons": ["accuracy 0.50 < 0.80"]})
    assert rejected.status == "rejected"
    assert reg.resolve("churn").version == 1  # no champion: latest *registered*
    with pytest.raises(RegistryError, match=r"rejected \(accuracy 0.50 < 0.80\)"):
        reg.promote("churn", 2, "champion")
    reg.promote("churn", 1, "champion")
    assert reg.champion("churn").version == 1  # type: ignore[union-attr]
    assert reg.resolve("churn@champion").aliases == ("champion",)
    assert reg.resolve("churn@2").status == "rejected"
    assert reg.resolve("churn").version == 1
    for bad in ("churn@9", "churn@canary", "nope", "bad/name@1", "churn@"):
        with pytest.raises(RegistryError):
            reg.resolve(bad)
    with pytest.raises(RegistryError, match="reads as a version"):
        reg.promote("churn", 1, "latest")


def test_registered_releases_must_be_signed_and_consistent(tmp_path: Path, key: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.register("churn", builder("churn", key))
    before = listing(tmp_path / "reg")
    with pytest.raises(RegistryError, match="must be signed"):
        reg.register("churn", builder("churn", None))
    with pytest.raises(RegistryError, match="expected other@1"):
        reg.register("other", builder("churn", key))

    def lying_build(version: int) -> tuple[ReleaseManifest, bytes]:
        manifest, _ = builder("churn", key)(version)
        return manifest, b"different bytes"

    with pytest.raises(RegistryError, match="do not match"):
        reg.register("churn", lying_build)
    assert listing(tmp_path / "reg") == before


def test_a_crash_while_writing_leaves_no_version(tmp_path: Path, key: Path) -> None:
    reg = Registry(tmp_path)

    def exploding_build(version: int) -> tuple[ReleaseManifest, bytes]:
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        reg.register("churn", exploding_build)
    with pytest.raises(RegistryError, match="no model named"):
        reg.get("churn", "latest")
    assert os.listdir(tmp_path / "tmp") == []
    # A writer killed mid-write (kill -9) leaves a half-built version in tmp/: never visible, swept later.
    (tmp_path / "tmp" / "churn-1-dead").mkdir()
    (tmp_path / "tmp" / "churn-1-dead" / "manifest.json").write_text("{half")
    with pytest.raises(RegistryError, match="no model named"):
        reg.get("churn", "latest")
    assert reg.register("churn", builder("churn", key)).version == 1
    assert os.listdir(tmp_path / "tmp") == []


def _register_many(root: str, key: str, count: int, queue: "multiprocessing.Queue[int]") -> None:
    reg = Registry(Path(root))
    for _ in range(count):
        queue.put(reg.register("churn", builder("churn", Path(key))).version)


def test_concurrent_processes_get_distinct_consecutive_versions(tmp_path: Path, key: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # no inherited locks or threads
    queue: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_register_many, args=(str(tmp_path / "reg"), str(key), 5, queue))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    versions = sorted(queue.get(timeout=120) for _ in range(20))
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert versions == list(range(1, 21))
    assert [r.version for r in Registry(tmp_path / "reg").versions("churn")] == versions


def test_parse_ref() -> None:
    assert parse_ref("churn@3") == ("churn", "3")
    assert parse_ref("churn") == ("churn", None)
    with pytest.raises(RegistryError):
        parse_ref("../x@1")


@pytest.mark.parametrize("ref", ["\u00b2", "\u0661", "1\n", "9" * 5000, "\u00b2\u00b2"])
def test_a_version_reference_is_ascii_digits_in_full(tmp_path: Path, key: Path, ref: str) -> None:
    """``str.isdigit`` takes '²' (``int`` then refuses it with a traceback) and '١' (read as 1): a reference is
    a version only when it is ASCII digits from start to end, else an alias that does not exist."""
    reg = Registry(tmp_path)
    reg.register("churn", builder("churn", key))
    with pytest.raises(RegistryError, match=r"has no alias|not a valid name"):
        reg.get("churn", ref)
    with pytest.raises(RegistryError):
        reg.resolve(f"churn@{ref}")
    with pytest.raises(RegistryError):
        reg.promote("churn", 1, ref)


def test_only_if_unset_keeps_the_first_champion(tmp_path: Path, key: Path) -> None:
    reg = Registry(tmp_path)
    for _ in range(2):
        reg.register("churn", builder("churn", key))
    assert reg.promote("churn", 1, "champion", only_if_unset=True).aliases == ("champion",)
    assert reg.promote("churn", 2, "champion", only_if_unset=True).aliases == ()
    assert reg.aliases("churn") == {"champion": 1}
