"""The registry, the same tests on both backends: a local folder and a real S3 server (SeaweedFS, started by the
session; tests/seaweedfs.py). Versions, aliases, rejected candidates, verified reads, and writers in several
processes racing for versions and aliases."""

import json
import multiprocessing
import multiprocessing.synchronize
import os
import time
from pathlib import Path

import pytest
from manifests import fake_manifest

from edge_agent.protocol import ReleaseManifest, sha256_hex
from edgeops.errors import RegistryError
from edgeops.release.registry import Registry, parse_ref
from edgeops.release.registry_store import STALE_TMP_S
from edgeops.release.signing import generate_keys, load_private_key, sign_manifest

pytestmark = pytest.mark.integration
Root = Path | str


def builder(model: str, key_path: Path | None, onnx: bytes = b"model-bytes" * 9):
    """A ``build`` callback as the pipeline passes it: bakes the allocated version in and signs."""

    def build(version: int) -> tuple[ReleaseManifest, bytes]:
        manifest = fake_manifest(model, version, onnx)
        return (manifest if key_path is None else sign_manifest(manifest, load_private_key(key_path))), onnx

    return build


@pytest.fixture(params=["folder", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Root:
    """A local folder, or a fresh prefix in the session's SeaweedFS bucket."""
    if request.param == "folder":
        return tmp_path / "reg"
    return str(request.getfixturevalue("s3_root"))


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return generate_keys(tmp_path / "keys")[0]


def listing(reg: Registry) -> list[str]:
    """Every object of the registry (a folder's temp files and lock file are no objects)."""
    return [k for k in reg.store.keys("") if not k.startswith("tmp/") and k != ".lock"]


def test_versions_are_monotonic_and_blobs_shared(root: Root, key: Path) -> None:
    reg = Registry(root)
    first = reg.register("churn", builder("churn", key), report={"note": "one"}, files={"sample.parquet": b"PAR1"})
    second = reg.register("churn", builder("churn", key))
    assert (first.version, second.version) == (1, 2)
    assert first.onnx_location == second.onnx_location  # same bytes, stored once
    assert sum(k.startswith("blobs/") for k in listing(reg)) == 1
    assert second.onnx_bytes() == b"model-bytes" * 9
    assert reg.get("churn", 1).report == {"note": "one"}
    assert reg.get("churn", 1).read_file("sample.parquet") == b"PAR1"
    assert reg.get("churn", 2).read_file("sample.parquet") is None
    assert reg.models() == ["churn"]
    assert [r.version for r in reg.versions("churn")] == [1, 2]
    assert reg.get("churn", "latest").version == 2
    assert reg.register("other", builder("other", key)).version == 1
    assert (first.onnx_path is None) == isinstance(root, str)  # a file only when the registry is a folder


def test_aliases_resolve_and_rejected_can_never_be_promoted(root: Root, key: Path) -> None:
    reg = Registry(root)
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
    assert reg.aliases("churn") == {"champion": 1}


def test_registered_releases_must_be_signed_and_consistent(root: Root, key: Path) -> None:
    reg = Registry(root)
    reg.register("churn", builder("churn", key))
    before = listing(reg)
    with pytest.raises(RegistryError, match="must be signed"):
        reg.register("churn", builder("churn", None))
    with pytest.raises(RegistryError, match="expected other@1"):
        reg.register("other", builder("churn", key))

    def lying_build(version: int) -> tuple[ReleaseManifest, bytes]:
        manifest, _ = builder("churn", key)(version)
        return manifest, b"different bytes"

    with pytest.raises(RegistryError, match="do not match"):
        reg.register("churn", lying_build)
    # A refused build leaves nothing but the claims on the numbers it was given.
    assert [k for k in listing(reg) if not k.endswith("/claim")] == [k for k in before if not k.endswith("/claim")]
    assert [r.version for r in reg.versions("churn")] == [1] and reg.models() == ["churn"]


def test_a_crash_while_writing_leaves_no_version(root: Root, key: Path) -> None:
    reg = Registry(root)

    def exploding_build(version: int) -> tuple[ReleaseManifest, bytes]:
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        reg.register("churn", exploding_build)
    with pytest.raises(RegistryError, match="no model named"):
        reg.get("churn", "latest")
    # A writer killed after writing its record but before the manifest (the commit): never visible.
    reg.store.write("models/churn/2/claim", b"{}")
    reg.store.write("models/churn/2/record.json", b'{"status": "registered"}')
    with pytest.raises(RegistryError, match="no model named"):
        reg.get("churn", "latest")
    assert reg.models() == []
    # Numbers that were claimed are not given out again (a writer elsewhere may still be using one).
    assert reg.register("churn", builder("churn", key)).version == 3
    assert [r.version for r in reg.versions("churn")] == [3]


def test_a_killed_writers_temp_files_are_swept_once_stale(tmp_path: Path, key: Path) -> None:
    reg = Registry(tmp_path)
    reg.register("churn", builder("churn", key))
    assert os.listdir(tmp_path / "tmp") == []
    dead, young = tmp_path / "tmp" / "churn-1-dead", tmp_path / "tmp" / "in-flight.tmp"
    dead.mkdir()
    (dead / "manifest.json").write_text("{half")
    young.write_bytes(b"another writer's")
    old = time.time() - STALE_TMP_S - 60
    os.utime(dead, (old, old))
    assert Registry(tmp_path).register("churn", builder("churn", key)).version == 2
    assert os.listdir(tmp_path / "tmp") == ["in-flight.tmp"]  # a live writer's file is left alone


def test_a_tampered_blob_or_file_is_refused_and_healed_by_the_next_write(root: Root, key: Path) -> None:
    reg = Registry(root)
    record = reg.register("churn", builder("churn", key), files={"sample.parquet": b"PAR1"})
    reg.store.write(record.onnx_key, b"model-bytez" * 9)   # same size, other bytes
    with pytest.raises(RegistryError, match=f"{record.manifest.artifact.sha256}.*tampered") as caught:
        reg.get("churn", 1).onnx_bytes()
    assert "blobs/sha256/" in str(caught.value)
    reg.store.write("models/churn/1/sample.parquet", b"PAR2")
    with pytest.raises(RegistryError, match=r"models/churn/1/sample\.parquet is damaged or was tampered with"):
        reg.get("churn", 1).read_file("sample.parquet")
    reg.store.write(record.onnx_key, b"")   # truncated
    with pytest.raises(RegistryError, match="tampered"):
        record.onnx_bytes()
    reg.register("churn", builder("churn", key))   # the same model again: its bytes in hand repair the blob
    assert reg.get("churn", 1).onnx_bytes() == b"model-bytes" * 9


def _register_many(root: str, key: str, count: int, start: "multiprocessing.synchronize.Barrier",
                   queue: "multiprocessing.Queue[int]") -> None:
    reg = Registry(root)
    build = builder("churn", Path(key))
    start.wait(120)   # all at once: spawned processes come up seconds apart
    for _ in range(count):
        queue.put(reg.register("churn", build).version)


def test_concurrent_processes_get_distinct_consecutive_versions(root: Root, key: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # no inherited locks or threads; the AWS variables are inherited
    start, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_register_many, args=(str(root), str(key), 25, start, queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    versions = sorted(queue.get(timeout=120) for _ in range(100))
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert versions == list(range(1, 101))  # none lost, none given twice
    assert [r.version for r in Registry(root).versions("churn")] == versions


def _promote_many(root: str, alias: str, mine: int, rounds: int, start: "multiprocessing.synchronize.Barrier",
                  queue: "multiprocessing.Queue[tuple[str, int, bool]]") -> None:
    reg = Registry(root)
    start.wait(120)
    won = "champion" in reg.promote("churn", mine, "champion", only_if_unset=True).aliases
    for i in range(rounds):
        reg.promote("churn", 1 + (mine + i) % 4, alias)
    queue.put((alias, 1 + (mine + rounds - 1) % 4, won))


def test_alias_updates_racing_in_several_processes_lose_none(root: Root, key: Path) -> None:
    """Each process moves an alias of its own back and forth: a lost update (one writer's aliases.json
    overwriting another's) would drop or rewind some process's alias. All race for the first champion too."""
    reg = Registry(root)
    for _ in range(4):
        reg.register("churn", builder("churn", key))
    ctx = multiprocessing.get_context("spawn")
    aliases = ["a", "b", "c", "d"]
    start, queue = ctx.Barrier(len(aliases)), ctx.Queue()
    procs = [ctx.Process(target=_promote_many, args=(str(root), alias, i + 1, 15, start, queue))
             for i, alias in enumerate(aliases)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=180) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    final = reg.aliases("churn")
    assert {alias: final[alias] for alias in aliases} == {alias: last for alias, last, _ in results}
    winners = [aliases.index(alias) + 1 for alias, _, won in results if won]
    assert winners == [final["champion"]]  # exactly one first champion, and it is the one that stayed
    assert set(final) == {"champion", *aliases}


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


def test_only_if_unset_keeps_the_first_champion(root: Root, key: Path) -> None:
    reg = Registry(root)
    for _ in range(2):
        reg.register("churn", builder("churn", key))
    assert reg.promote("churn", 1, "champion", only_if_unset=True).aliases == ("champion",)
    assert reg.promote("churn", 2, "champion", only_if_unset=True).aliases == ()
    assert reg.aliases("churn") == {"champion": 1}


def test_a_folder_registry_written_before_claims_reads_and_continues(tmp_path: Path, key: Path) -> None:
    """Folders written by an older edgeops: no claim files, records without file hashes."""
    manifest, onnx = builder("churn", key)(1)
    version_dir = tmp_path / "models" / "churn" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "manifest.json").write_bytes(manifest.to_bytes())
    (version_dir / "record.json").write_text(json.dumps({"model": "churn", "version": 1, "status": "registered",
                                                         "created": "2026-01-01T00:00:00+00:00", "report": {}}))
    (version_dir / "sample.parquet").write_bytes(b"PAR1")
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "blobs" / "sha256" / sha256_hex(onnx)).write_bytes(onnx)
    (tmp_path / "models" / "churn" / "aliases.json").write_text('{"champion": 1}')
    reg = Registry(tmp_path)
    old = reg.resolve("churn")
    assert (old.version, old.aliases, old.read_file("sample.parquet")) == (1, ("champion",), b"PAR1")
    assert old.onnx_bytes() == onnx
    assert reg.register("churn", builder("churn", key)).version == 2
