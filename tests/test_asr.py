"""Speech recognition: the packaged Whisper tiny.en reads back a synthetic request with word times and
confidences, silent and too-short recordings never reach the model, results are cached by content and settings,
pocketsphinx runs as the baseline, and the word error rate is right (after Whisper's normaliser)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mmhelpers.asr import (
    PocketSphinx,
    SpeechRecogniser,
    Transcript,
    Word,
    _transcript_from_json,
    frames_tensor,
    normalise_words,
    states_matrix,
    transcribe,
    word_error_rate,
)
from mmhelpers.audio import load_audio
from mmhelpers.speech import Voice, synthesize

TEXT = "I want to cancel my internet contract"


@pytest.fixture(scope="module")
def whisper() -> SpeechRecogniser:
    return SpeechRecogniser()


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, int]:
    (wave,), sr = synthesize([TEXT], Voice("piper", "joe", speed=160))
    return wave, sr


def test_whisper_reads_a_request_with_word_times(whisper: SpeechRecogniser, clip):
    wave, sr = clip
    t = whisper(wave, sr)
    assert word_error_rate([TEXT], [t.text]) < 0.15, t.text
    assert t.words and all(0 <= w.start <= w.end <= len(wave) / sr + 0.5 for w in t.words)
    assert [w.start for w in t.words] == sorted(w.start for w in t.words)
    assert 0.5 < t.confidence <= 1.0 and not t.skipped
    assert len(t.states) == 384 and np.isfinite(t.states).all()  # tiny.en's encoder width, pooled over the clip
    silent = whisper(np.zeros(sr, np.float32), sr)
    states = states_matrix([t, silent])
    assert states.shape == (2, 384) and not states[1].any()  # nothing heard: zeros
    with pytest.raises(ValueError, match="no transcript has encoder states"):
        states_matrix([silent])


def test_encoder_frames_come_with_the_transcript(clip):
    """frames=10: one token per 200 ms of the clip, averaging the same encoder states the pooled vector averages;
    the text is what it is without them; the tokens survive the cache's JSON; a skipped clip has none."""
    from dataclasses import asdict

    wave, sr = clip
    plain, framed = SpeechRecogniser(), SpeechRecogniser(frames=10)
    assert "frames" not in plain.settings and framed.settings["frames"] == 10  # cached apart, old caches kept
    t = framed(wave, sr)
    assert t.text == plain(wave, sr).text
    f = t.frame_states()
    seconds = len(wave) / sr
    assert f.shape == (int(np.ceil(seconds * 50 / 10)), 384) and np.isfinite(f.numpy()).all()
    n = int(np.ceil(seconds * 50))  # encoder frames of the clip; the last token averages the remainder only
    weights = np.full(len(f), 10.0)
    weights[-1] = n - 10 * (len(f) - 1)
    pooled = (f.numpy() * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(pooled, t.states, atol=0.02)  # float16 tokens, 4-decimal states
    assert _transcript_from_json(asdict(t)) == t
    silent = framed(np.zeros(sr, np.float32), sr)
    both = frames_tensor([t, silent])
    assert both.shape == (2, len(f), 384) and not both[1].any() and both[0].ne(0).any(-1).all()
    with pytest.raises(ValueError, match="no transcript has encoder frames"):
        frames_tensor([plain(wave, sr)])
    with pytest.raises(ValueError, match="frames"):
        SpeechRecogniser(frames=-1)


def test_silent_and_too_short_wavs_never_reach_the_model(whisper: SpeechRecogniser, tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", (np.random.default_rng(0).standard_normal(400) * 3000).astype(np.int16), 8000)
    silent, sr1 = load_audio(tmp_path / "silent.wav")
    short, sr2 = load_audio(tmp_path / "short.wav")
    for wave, sr, why in ((silent, sr1, "silent"), (short, sr2, "too short")):
        t = whisper(wave, sr)
        assert t == Transcript("", skipped=why) and t.confidence == 0.0
        assert PocketSphinx()(wave, sr).skipped == why


def test_transcripts_are_cached_by_content_and_settings(tmp_path, clip):
    class Counting:
        model_id, settings, calls = "fake", {"beam_size": 1}, 0

        def __call__(self, wave, sr):
            Counting.calls += 1
            return Transcript(f"{len(wave)}", [Word("x", 0.0, 0.1, 0.9)], -0.1, 0.01)

    wave, sr = clip
    waves = [wave, wave[:8000], wave[:12000]]
    first = transcribe(waves, sr, Counting(), shard_size=2, progress=False)
    assert Counting.calls == 3 and first[1].text == "8000"
    assert transcribe(waves, sr, Counting(), shard_size=2, progress=False) == first and Counting.calls == 3
    other = Counting()
    other.settings = {"beam_size": 5}
    transcribe(waves, sr, other, shard_size=2, progress=False)
    assert Counting.calls == 6  # a changed setting is a new cache entry
    transcribe([wave, wave[:9000], wave[:12000]], sr, Counting(), shard_size=2, progress=False)
    assert Counting.calls == 9  # changed content too
    assert not list((tmp_path / "cache" / "asr").rglob("*.tmp"))


def test_pocketsphinx_baseline_hears_something(clip):
    wave, sr = clip
    t = PocketSphinx()(wave, sr)
    assert t.text and t.text == t.text.lower()
    assert word_error_rate([TEXT], [t.text]) < 1.0


def test_word_error_rate():
    assert word_error_rate(["pay my bill"], ["pay my bill"]) == 0.0
    assert word_error_rate(["pay my bill"], ["pay the bill"]) == pytest.approx(1 / 3)
    assert word_error_rate(["pay my bill", "hello"], ["", "hello"]) == pytest.approx(3 / 4)  # empty transcript
    assert word_error_rate(["I was charged forty five dollars"], ["I was charged $45."]) == 0.0
    assert word_error_rate(["uh I don't recognise it"], ["I do not recognize it"]) == 0.0
    assert normalise_words("Hello, I, you know...") == "hello i you know"
    with pytest.raises(ValueError, match="all empty"):
        word_error_rate(["", "uh"], ["a", "b"])
    with pytest.raises(ValueError, match="hypotheses"):
        word_error_rate(["a"], [])
