"""The demo model's warning says why no Stable Diffusion weights were had, in whole words."""

import pytest

from studio.images.backends.diffusers.weights import DOWNLOAD_REASON_LIMIT, download_failure

# huggingface_hub's errors, as they read offline and without a network
OFFLINE = (
    "Cannot find an appropriate cached snapshot folder for the specified revision on the local "
    "disk and outgoing traffic has been disabled. To enable repo look-ups and downloads online, "
    "pass 'local_files_only=False' as input."
)
NO_NETWORK = (
    "Got: ConnectError: [Errno -2] Name or service not known\nAn error happened while trying to "
    "locate the files on the Hub, and we cannot find the appropriate snapshot folder."
)


def test_offline_says_hf_hub_offline_not_the_hubs_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_failure(OSError(OFFLINE)) == "HF_HUB_OFFLINE is set, so nothing is downloaded"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (NO_NETWORK, "ConnectError: [Errno -2] Name or service not known"),
        (OFFLINE, OFFLINE.split(". ")[0]),  # the first sentence, whole
        ("", "OSError"),
    ],
)
def test_online_the_hubs_first_sentence_whole(monkeypatch, message, reason):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert download_failure(OSError(message)) == reason


def test_a_very_long_reason_ends_at_a_word(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    reason = download_failure(RuntimeError("lorem ipsum dolor " * 100))
    assert len(reason) <= DOWNLOAD_REASON_LIMIT + 1 and reason.endswith("…")
    assert all(word in {"lorem", "ipsum", "dolor"} for word in reason[:-1].split())
