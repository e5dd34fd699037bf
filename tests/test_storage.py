import os
from pathlib import Path

import pytest

from brats.storage import Location, StorageError, read_bytes, redact, resolve, write_bytes_atomic


def test_resolve_local_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("rel/dir") == Location("file", str(tmp_path / "rel" / "dir"))
    assert resolve(f"file://{tmp_path}/x").path == f"{tmp_path}/x"
    assert resolve(str(tmp_path)).uri == str(tmp_path)


def test_resolve_s3_and_endpoint(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    loc = resolve("s3://bucket/a/b/")
    assert (loc.protocol, loc.path, loc.s3_endpoint) == ("s3", "bucket/a/b", None)
    assert loc.uri == "s3://bucket/a/b"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert resolve("s3://bucket").s3_endpoint == "http://127.0.0.1:9"
    assert resolve("s3://bucket", s3_endpoint="http://x:1").s3_endpoint == "http://x:1"


@pytest.mark.parametrize("uri", ["", "s3://", "gs://b/x", "s3://key:secret@bucket/x"])
def test_resolve_rejects(uri):
    with pytest.raises(StorageError) as info:
        resolve(uri)
    assert "secret" not in str(info.value)


def test_join_refuses_escape(tmp_path):
    loc = resolve(str(tmp_path))
    assert loc.join("masks", "a.nii.gz") == f"{tmp_path}/masks/a.nii.gz"
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(StorageError):
            loc.join(bad)


def test_redact():
    assert redact("s3://key:secret@bucket/p?token=t") == "s3://bucket/p"
    assert redact("/local/path") == "/local/path"


def test_atomic_local_write_leaves_no_temp_and_never_half(tmp_path):
    loc = resolve(str(tmp_path))
    fs = loc.filesystem()
    path = loc.join("deep", "obj.bin")
    write_bytes_atomic(fs, path, b"first")
    write_bytes_atomic(fs, path, b"second")
    assert Path(path).read_bytes() == b"second"
    assert os.listdir(tmp_path / "deep") == ["obj.bin"]

    with pytest.raises(TypeError):
        write_bytes_atomic(fs, loc.join("deep", "bad.bin"), object())  # type: ignore[arg-type]
    assert os.listdir(tmp_path / "deep") == ["obj.bin"]


def test_read_bytes_limit(tmp_path):
    loc = resolve(str(tmp_path))
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert read_bytes(loc.filesystem(), loc.join("f"), max_bytes=100) == b"x" * 100
    with pytest.raises(StorageError, match="over the limit"):
        read_bytes(loc.filesystem(), loc.join("f"), max_bytes=99)


def test_partial_writes_of_a_killed_process_are_removed_and_nothing_else(tmp_path):
    import tempfile

    from brats.storage import remove_partial_writes

    loc = resolve(str(tmp_path))
    write_bytes_atomic(loc.filesystem(), loc.join("done.json"), b"{}")
    # What write_bytes_atomic leaves when killed between its temp file and the rename.
    fd, _ = tempfile.mkstemp(prefix=".case.json.", suffix=".tmp", dir=tmp_path)
    os.write(fd, b'{"half')
    os.close(fd)
    (tmp_path / ".keep").write_text("not ours")
    assert remove_partial_writes(loc.filesystem(), str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "done.json"]
    assert remove_partial_writes(loc.filesystem(), str(tmp_path / "absent")) == 0
