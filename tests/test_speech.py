"""Speech synthesis offline: espeak-ng voices differ from each other and say what they are given (Whisper reads it
back), Piper's packaged voice is deterministic, and empty text or a missing voice is refused clearly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mmhelpers.errors import ModelUnavailableError
from mmhelpers.speech import Voice, espeak_available, flite_available, piper_voice_path, synthesize

needs_voices = pytest.mark.skipif(
    not (espeak_available() and flite_available()) and not os.environ.get("CI"),  # CI installs them (.ci/run)
    reason="espeak-ng or flite is not installed (apt-get install espeak-ng flite)",
)


@needs_voices
def test_espeak_voices_speak_and_differ():
    a, sr = synthesize(["please reset my password"], Voice("espeak", "en-us+m3", 160, 50))
    b, _ = synthesize(["please reset my password"], Voice("espeak", "en-gb-scotland+f2", 190, 70))
    assert sr == 22050 and a[0].dtype == np.float32
    assert 0.8 < len(a[0]) / sr < 3.5 and len(b[0]) < len(a[0])  # faster voice, shorter clip
    assert np.abs(a[0]).max() > 0.05


@needs_voices
def test_espeak_slower_is_longer_and_deterministic():
    slow, sr = synthesize(["where is my order"], Voice("espeak", "en-us", 120))
    fast, _ = synthesize(["where is my order"], Voice("espeak", "en-us", 200))
    again, _ = synthesize(["where is my order"], Voice("espeak", "en-us", 120))
    assert len(slow[0]) > 1.3 * len(fast[0])
    np.testing.assert_array_equal(slow[0], again[0])


@needs_voices
def test_flite_voices_speak_at_their_speed_and_pitch():
    a, sr = synthesize(["my internet is really slow"], Voice("flite", "slt", speed=160, pitch=180))
    slow, _ = synthesize(["my internet is really slow"], Voice("flite", "slt", speed=120, pitch=180))
    low, _ = synthesize(["my internet is really slow"], Voice("flite", "slt", speed=160, pitch=120))
    assert sr == 16000 and 0.8 < len(a[0]) / sr < 3.5 and len(slow[0]) > 1.2 * len(a[0])
    assert not np.array_equal(a[0][: len(low[0])], low[0][: len(a[0])])


def test_piper_joe_is_deterministic():
    voice = Voice("piper", "joe", speed=175)
    (a,), sr = synthesize(["cancel my contract"], voice)
    (b,), _ = synthesize(["cancel my contract"], voice)
    assert sr == 22050 and 0.5 < len(a) / sr < 3.0
    np.testing.assert_array_equal(a, b)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="empty"):
        synthesize(["  "], Voice("piper", "joe"))
    with pytest.raises(ValueError, match="unknown speech engine"):
        synthesize(["hello"], Voice("festival", "kal"))
    with pytest.raises(ModelUnavailableError, match="no such Piper voice"):
        piper_voice_path("/nowhere/voice.onnx")
    assert Voice("espeak", "en-gb+f3", 150, 40).id == "espeak-en-gb+f3-s150-p40"
