"""The notebooks of scenario 06 (a customer-service voice assistant) with their smoke settings on the embedded
calls, chained in one cache for the module (calls, transcripts, features), as in a session.

The embedded set is small (8 requests per intent, 82 training calls for 15 intents): the assertions are on the
data's construction (held-out voices and phrasings, the telephone band), the recogniser (cached, better than
pocketsphinx on real speech, worse in noise) and what the true transcript teaches a head; the fusion gain is a
claim of the full run (results/customer_service.json).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from notebook_runs import scenario_runner

from mmhelpers.data.librivox import LIBRIVOX
from mmhelpers.speech import espeak_available, flite_available

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.usefixtures("module_cache"),
    pytest.mark.skipif(
        not (espeak_available() and flite_available()) and not os.environ.get("CI"),  # CI installs them (.ci/run)
        reason="espeak-ng or flite is not installed (apt-get install espeak-ng flite)",
    ),
]
run = scenario_runner("06_customer_service")


def test_customer_service_representation(tmp_path: Path):
    m = run("01_representation", tmp_path)
    assert m["n_intents"] == 15 and m["sr"] == 8000 and m["counts"]["test"] > 0
    assert m["phrasings"]["shared"] == 0 and m["train_test_voice_overlap"] == 0  # unseen phrasings, unseen voices
    assert m["voices"]["train"] >= 10 and m["voices"]["test"] >= 3
    above = m["power_above_3400"]
    assert above["telephone"] < 0.005 < above["wideband"]  # the line cuts what lies above 3.4 kHz
    assert m["log_mel_shape"][0] == 40 and m["tokens_example"]["n_tokens"] >= 5


def test_customer_service_recognition_and_fusion(tmp_path: Path):
    fx = run("02_feature_extraction", tmp_path / "02")
    assert fx["cache_identical"] and fx["seconds"]["cached"] < 0.2 * fx["seconds"]["recognise"]
    wer = fx["wer_calls_by_snr"]
    assert wer["quiet"] < 0.5 and wer["0"] > 2 * wer["quiet"]  # noise at 0 dB wrecks the transcript
    lv = fx["wer"]  # real read speech (Debian's pocketsphinx-testdata; CI installs it)
    if LIBRIVOX.is_dir() or os.environ.get("CI"):
        assert lv["whisper_tiny_en"]["librivox"] < 0.15 < lv["pocketsphinx"]["librivox"]
    nn = fx["nearest_neighbour_accuracy"]
    assert nn["true transcript"] > 5 * fx["chance"]  # MiniLM groups paraphrases of one intent

    fu = run("03_fusion", tmp_path / "03")
    r = fu["results"]
    assert r["true transcript"]["accuracy"] > 0.5  # unseen phrasings; chance 1/15
    assert r["recognised transcript"]["by_snr"]["quiet"] > 2 * fu["chance"]
    assert set(r) == {"true transcript", "recognised transcript", "audio", "early", "late", "gated"}


def test_customer_service_own_folder(tmp_path: Path):
    """A user's folder of recorded calls (five intents of their own, five speakers, 22.05 and 44.1 kHz, a speaker
    held out): the representation and the fusion notebooks run on it unchanged (03 decodes the calls itself)."""
    from userdata import write_call_folder

    folder = str(write_call_folder(tmp_path / "my_calls"))
    rep = run("01_representation", tmp_path / "01", DATA=folder)
    assert rep["summary"]["intents"] == ["billing", "moving", "other", "sales", "technical"] and rep["sr"] == 8000
    assert rep["train_test_voice_overlap"] == 0 and rep["summary"]["with_transcript"] == 100
    fu = run("03_fusion", tmp_path / "03", DATA=folder)
    r = fu["results"]
    assert fu["chance"] == 0.2 and set(r["recognised transcript"]["by_snr"]) == {"quiet"}
    assert r["true transcript"]["accuracy"] > 0.6 and r["recognised transcript"]["accuracy"] > 0.4  # chance 0.2
