"""The key that seals node credentials: from NEOCLOUD_SECRET_KEY, or a key file under the data
directory that the first start makes with mode 0600 — and processes starting at once agree on it
(the file is never seen half-written)."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from neocloud.api.platform import SECRET_KEY_FILE, secret_box
from neocloud.kernel.secrets import SealedSecretError, SecretBox
from neocloud.kernel.settings import load_settings


def test_the_first_start_makes_a_private_key_file_that_later_starts_reuse(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    sealed = secret_box(settings).seal({"private_key": "k"})
    path = tmp_path / SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_box(settings).open(sealed) == {"private_key": "k"}
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_KEY_FILE]  # no temporary left


def test_starts_at_the_same_moment_agree_on_one_key(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        boxes = list(pool.map(lambda _: secret_box(settings), range(32)))
    sealed = boxes[0].seal({"x": 1})
    assert all(box.open(sealed) == {"x": 1} for box in boxes)


def test_the_environment_key_wins_and_another_key_cannot_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SecretBox.new_key().decode()
    monkeypatch.setenv("NEOCLOUD_SECRET_KEY", key)
    box = secret_box(load_settings(data_dir=tmp_path))
    assert not (tmp_path / SECRET_KEY_FILE).exists()
    sealed = box.seal({"private_key": "k"})
    assert SecretBox(key).open(sealed) == {"private_key": "k"}
    with pytest.raises(SealedSecretError):
        SecretBox(SecretBox.new_key()).open(sealed)
    assert key not in repr(box)
