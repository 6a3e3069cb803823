import os
from pathlib import Path

import pytest
from releases import Release, build_release, new_key

from edge_agent.errors import StoreError
from edge_agent.store import ModelRef, ModelStore, Pointer, atomic_write

pytestmark = pytest.mark.unit

LIMIT = 1 << 24


@pytest.fixture(scope="module")
def release() -> Release:
    return build_release("churn", 2, new_key())


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_install_then_load_round_trips_and_leaves_no_temp_files(tmp_path: Path, release: Release) -> None:
    store = ModelStore(tmp_path / "data")
    ref = store.install(release.manifest, release.data)
    assert ref == ModelRef("churn", 2) and store.has(ref)
    manifest, data = store.load(ref, LIMIT)
    assert manifest == release.manifest and data == release.data
    names = {p.name for p in all_files(tmp_path)}
    assert names == {"model.onnx", "manifest.json"}


def test_a_corrupt_stored_model_fails_its_hash(tmp_path: Path, release: Release) -> None:
    store = ModelStore(tmp_path)
    ref = store.install(release.manifest, release.data)
    path = store.model_dir(ref) / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match="corrupt on disk"):
        store.load(ref, LIMIT)
    (store.model_dir(ref) / "manifest.json").unlink()
    with pytest.raises(StoreError, match="incomplete on disk"):
        store.load(ref, LIMIT)


def test_pointer_round_trip_and_a_missing_pointer_means_no_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.read_pointer() == Pointer()
    pointer = Pointer(ModelRef("churn", 3), ModelRef("churn", 2))
    store.write_pointer(pointer)
    assert store.read_pointer() == pointer
    (tmp_path / "current").write_text('{"current": {"model": "../x", "version": 1}}')
    with pytest.raises(StoreError):
        store.read_pointer()


def test_state_file_garbage_reads_as_none(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.read_state() is None
    store.write_state({"phase": "serving"})
    assert store.read_state() == {"phase": "serving"}
    (tmp_path / "state.json").write_bytes(b"\x00\xff{")
    assert store.read_state() is None


@pytest.mark.parametrize("name", ["..", "a/b", "../../etc", "/abs", ".hidden", "a..b", "x" * 65, ""])
def test_unsafe_model_names_are_refused(name: str) -> None:
    with pytest.raises(StoreError, match="unsafe model reference"):
        ModelRef(name, 1)


@pytest.mark.parametrize("parts", [("..",), ("models", "..", ".."), ("/etc/passwd",), (".",), ("a", "../../b")])
def test_paths_outside_the_data_dir_are_refused(tmp_path: Path, parts: tuple[str, ...]) -> None:
    store = ModelStore(tmp_path / "data")
    with pytest.raises(StoreError, match="would leave the data directory"):
        store.path(*parts)


def test_a_symlink_out_of_the_data_dir_is_caught_by_path_resolution(tmp_path: Path, release: Release) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = ModelStore(tmp_path / "data")
    (store.root / "models").symlink_to(outside)
    with pytest.raises(StoreError, match="would leave the data directory"):
        store.install(release.manifest, release.data)
    assert all_files(outside) == set()


def test_prune_keeps_only_current_and_previous(tmp_path: Path, release: Release) -> None:
    store = ModelStore(tmp_path)
    import dataclasses

    for v in (1, 2, 3):
        store.install(dataclasses.replace(release.manifest, version=v), release.data)
    store.prune({ModelRef("churn", 3), ModelRef("churn", 2)})
    assert sorted(os.listdir(tmp_path / "models" / "churn")) == ["2", "3"]


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")
    atomic_write(target, b"new" * 1000)
    assert target.read_bytes() == b"new" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
