"""The notebooks of scenario 06 (a customer-service voice assistant) with their smoke settings on the embedded
calls, chained in one cache for the module (calls, transcripts, features), as in a session.

The embedded set is small (8 requests per intent, 82 training calls for 15 intents): the assertions are on the
data's construction (held-out voices, new sentences, the telephone band), the recogniser (cached, better than
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


@pytest.fixture
def module_lm(module_cache: Path, shared_lm: Path) -> Path:
    """SmolLM2 converted once a session, linked into this module's cache (notebooks 04 and 05 load it)."""
    return shared_lm


def test_customer_service_representation(tmp_path: Path):
    m = run("01_representation", tmp_path)
    assert m["n_intents"] == 15 and m["sr"] == 8000 and m["counts"]["test"] > 0
    assert m["sentences_shared"] == 0 and m["train_test_voice_overlap"] == 0  # new sentences, unseen voices
    assert m["voices"]["train"] >= 10 and m["voices"]["test"] >= 3
    above = m["power_above_3400"]
    assert above["telephone"] < 0.005 < above["wideband"]  # the line cuts what lies above 3.4 kHz
    assert m["log_mel_shape"][0] == 40 and m["tokens_example"]["n_tokens"] >= 5


@pytest.mark.usefixtures("module_lm")
def test_customer_service_recognition_fusion_training_evaluation(tmp_path: Path):
    fx = run("02_feature_extraction", tmp_path / "02")
    assert fx["cache_identical"] and fx["seconds"]["cached"] < 0.2 * fx["seconds"]["recognise"]
    wer = fx["wer_calls_by_snr"]
    assert wer["quiet"] < 0.5 and wer["0"] > 2 * wer["quiet"]  # noise at 0 dB wrecks the transcript
    lv = fx["wer"]  # real read speech (Debian's pocketsphinx-testdata; CI installs it)
    if LIBRIVOX.is_dir() or os.environ.get("CI"):
        assert lv["whisper_tiny_en"]["librivox"] < 0.15 < lv["pocketsphinx"]["librivox"]
    nn = fx["nearest_neighbour_accuracy"]
    assert nn["true transcript"] > 5 * fx["chance"]  # MiniLM groups paraphrases of one intent
    tok = fx["audio_tokens"]
    assert tok["frame_ms"] == 200 and 4.5 < tok["tokens_per_second"] < 6  # one audio token per 200 ms of the call
    assert tok["shape"][0] == tok["word_tokens"][0] == fx["n_calls"] and tok["word_tokens"][2] == 384
    cnn = fx["log_mel_cnn"]  # trained from scratch (it learns on the full set: results/customer_service.json)
    assert 1 <= cnn["epochs"] <= 6 and set(cnn["accuracy"]) == {"train", "test"}

    fu = run("03_fusion", tmp_path / "03")
    r = fu["results"]
    assert r["true transcript"]["accuracy"] > 0.5  # embedded: every test request of a phrasing of its own; chance 1/15
    assert r["recognised transcript"]["by_snr"]["quiet"] > 2 * fu["chance"]
    assert set(r) == {"true transcript", "recognised transcript", "audio", "early", "late", "late + confidence", "gated",
                      "cross-attention", "audio (log-mel CNN)"}  # fmt: skip
    assert r["cross-attention"]["by_snr"]["quiet"] > 2 * fu["chance"]  # words attending to Whisper's frames
    assert -1 <= fu["attention_alignment"] <= 1

    tr = run("04_training", tmp_path / "04", ZERO_SHOT_N=8)
    aug = tr["augmentation"]
    assert aug["n_copies"] == 12 and set(aug["with"]) == {"audio", "early", "late", "late + confidence", "gated"}
    te = tr["text_encoder"]
    assert te["frozen MiniLM + head"]["true"]["accuracy"] > 0.5  # as in 03
    assert te["top layer fine-tuned"]["true"]["accuracy"] > 3 * tr["chance"]  # the tuned layer learned the intents
    zs = tr["zero_shot"]
    assert zs["n_calls"] == 8 and set(zs["true transcript"]) == {"zero-shot", "zero-shot calibrated", "trained head"}
    assert tr["loss_drop"] and 0 <= tr["curves"]["best_epoch"] < len(tr["curves"]["train_loss"])

    ev = run("05_evaluation", tmp_path / "05")
    assert ev["results"]["true transcript"]["accuracy"] > 0.5
    sel = ev["selective"]["true transcript"]
    assert 0.0 <= sel["coverage_at_target"] <= 1.0
    assert ev["calibration"]["temperature"] > 0 and 0 <= ev["calibration"]["ece_scaled"] <= 1
    if LIBRIVOX.is_dir() or os.environ.get("CI"):
        assert ev["wer"]["whisper_tiny_en"]["librivox"] < 0.15 < ev["wer"]["pocketsphinx"]["librivox"]
    lat = ev["latency_ms"]
    assert 0 < lat["intent"]["median"] < lat["recognition"]["median"] < 10_000  # recognition dominates
    assert ev["demo"] and all(d["said"] and d["reply_seconds"] > 0.5 for d in ev["demo"])  # a spoken reply
    assert len(ev["demo"][0]["reply"].split()) >= 4  # SmolLM2 wrote the surest call's reply
    study = ev["phrasing_study"]  # the text model retrained on other splits of the requests (two in smoke runs)
    assert study["data_seeds"] == [0, 1] and all(
        len(study[p]["accuracy"]) == 2 for p in ("held-out phrasings", "random requests")
    )
    assert (
        study["held-out phrasings"]["mean"] > 5 * ev["chance"] and study["random requests"]["mean"] > 5 * ev["chance"]
    )


@pytest.mark.usefixtures("module_lm")
def test_customer_service_own_folder(tmp_path: Path):
    """A user's folder of recorded calls (five intents of their own, five speakers, 22.05 and 44.1 kHz, a speaker
    held out): the representation and the evaluation notebooks run on it unchanged (05 decodes the calls itself,
    augments them when asked, trains every model and answers a call)."""
    from userdata import write_call_folder

    folder = str(write_call_folder(tmp_path / "my_calls"))
    rep = run("01_representation", tmp_path / "01", DATA=folder)
    assert rep["summary"]["intents"] == ["billing", "moving", "other", "sales", "technical"] and rep["sr"] == 8000
    assert rep["train_test_voice_overlap"] == 0 and rep["summary"]["with_transcript"] == 100
    ev = run("05_evaluation", tmp_path / "05", DATA=folder, AUGMENT_COPIES=1)
    r = ev["results"]
    assert ev["chance"] == 0.2 and set(r["recognised transcript"]["by_snr"]) == {"quiet"}
    assert r["true transcript"]["accuracy"] > 0.6 and r["recognised transcript"]["accuracy"] > 0.4  # chance 0.2
    assert ev["demo"][0]["intent"] in rep["summary"]["intents"]
    assert ev["phrasing_study"] == {}  # your calls have no phrasings to hold out
