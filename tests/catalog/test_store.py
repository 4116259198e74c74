import errno
import hashlib
import os

import pytest

from studio.catalog.files import TMP_PREFIX
from studio.catalog.records import ImageRecord, PromptRecord
from studio.catalog.schema import MIGRATIONS
from studio.catalog.store import Store
from studio.core.targets import PromptSpec, Target


def record(key="k1", **changes):
    values = dict(
        cache_key=key,
        target="episode",
        season=1,
        episode=2,
        style=None,
        image_index=0,
        prompt="p",
        negative_prompt="n",
        model="demo",
        sampler="Euler",
        steps=2,
        cfg=7.0,
        width=64,
        height=64,
        seed=5,
        placeholder=True,
        provenance={"a": 1},
    )
    values.update(changes)
    return ImageRecord(**values)


def test_images_are_content_addressed_and_found_by_cache_key(tmp_path):
    store = Store(tmp_path)
    row = store.add_image(record(), b"png-bytes")
    sha = hashlib.sha256(b"png-bytes").hexdigest()
    assert row["path"] == f"images/{sha[:2]}/{sha}.png"
    assert store.image_path(row).read_bytes() == b"png-bytes"
    assert store.find_image("k1")["sha256"] == sha
    assert store.find_image("other") is None
    # Adding the same key again replaces the row: no duplicates.
    store.add_image(record(), b"png-bytes")
    assert len(store.images()) == 1
    # A row whose file is gone is not a cache hit.
    store.image_path(row).unlink()
    assert store.find_image("k1") is None


def test_stale_temporaries_are_removed_and_migrations_run_once(tmp_path):
    Store(tmp_path).close()
    stale = tmp_path / "images" / "ab" / f"{TMP_PREFIX}123.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a png")
    store = Store(tmp_path)
    assert not stale.exists()
    names = [r[0] for r in store._db.execute("SELECT name FROM migrations")]
    assert names == [name for name, _ in MIGRATIONS]
    assert names[0] == "001_create_tables" and len(set(names)) == len(names)


def test_prompts_and_llm_cache(tmp_path):
    store = Store(tmp_path)
    spec = PromptSpec("x", "blurry", "anime", "why")
    store.add_prompt(PromptRecord("key", Target("season", 1, None, "anime"), spec, "fake", "h",
                                  [{"q": "a"}]))  # fmt: skip
    (row,) = store.prompts(target="season", season=1)
    assert row.target == Target("season", 1, None, "anime") and row.trace == [{"q": "a"}]
    assert row.spec == spec and row.llm_model == "fake" and row.created_at
    assert store.get_llm_response("nope") is None
    store.put_llm_response("k", "m", "{}")
    assert store.get_llm_response("k") == "{}"


def test_a_failed_write_names_the_file_it_was_writing(tmp_path, monkeypatch):
    from studio.catalog import files

    def full(fd, *args, **kwargs):
        os.close(fd)
        raise OSError(errno.EFBIG, "File too large")  # as a write past `ulimit -f` says it

    monkeypatch.setattr(files.os, "fdopen", full)
    target = tmp_path / "images" / "a.png"
    with pytest.raises(OSError) as error:
        files.atomic_write(target, b"png")
    assert error.value.filename == str(target) and error.value.errno == errno.EFBIG
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_a_full_data_folder_is_named_full_not_unwritable(tmp_path):
    from studio.catalog.files import unwritable_error

    full = unwritable_error(tmp_path, OSError(errno.ENOSPC, "No space left on device"))
    assert "is full (No space left on device)" in str(full) and "STUDIO_DATA_DIR" in str(full)
    assert "permissions" not in str(full)
    denied = unwritable_error(tmp_path, PermissionError(errno.EACCES, "Permission denied"))
    assert "permissions" in str(denied)
