"""The help-desk calls: 15 intents with at least 40 distinct requests each, requests (or phrasings) and voices held
out, more training text written from the training phrasings, the
generated set deterministic and cached, and a user's folder of recorded calls read with its own intents."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmhelpers.errors import DataError
from mmhelpers.scenarios.customer_service.data import EMBEDDED, CallPlan, build_calls, load_call_folder, plan_calls
from mmhelpers.scenarios.customer_service.requests import (
    INTENTS,
    TEMPLATES,
    make_requests,
    refill,
    split_phrasings,
    split_requests,
    split_templates,
)
from mmhelpers.scenarios.customer_service.voices import FLITE_TEST, TEST_ACCENTS, TEST_VARIANTS, speakers
from mmhelpers.speech import espeak_available, flite_available

needs_voices = pytest.mark.skipif(
    not (espeak_available() and flite_available()) and not os.environ.get("CI"),  # CI installs them (.ci/run)
    reason="espeak-ng or flite is not installed (apt-get install espeak-ng flite)",
)


def test_fifteen_intents_with_forty_distinct_requests_each():
    requests = make_requests(40, seed=0)
    assert len(INTENTS) == 15 and set(TEMPLATES) == set(INTENTS)
    by_intent = Counter(r.intent for r in requests)
    assert set(by_intent.values()) == {40}
    assert len({r.text for r in requests}) == len(requests)
    for intent in INTENTS:  # every phrasing used; slots vary the wording beyond the greeting and fillers
        assert len({r.core for r in requests if r.intent == intent}) >= len(TEMPLATES[intent]) == 20
    assert len({r.core for r in requests}) >= 400  # free paraphrases without slots repeat only with new dressing
    assert len({t for ts in TEMPLATES.values() for t in ts}) == 300  # no phrasing written twice
    assert [r.text for r in make_requests(40, seed=0)] == [r.text for r in requests]
    assert [r.text for r in make_requests(40, seed=1)] != [r.text for r in requests]
    assert any(" uh " in r.text or " um " in r.text or "I mean" in r.text for r in requests)  # fillers


def test_split_holds_whole_requests_out_and_the_stricter_split_whole_phrasings():
    requests = make_requests(40)
    split = split_requests(requests, seed=0)
    assert sorted(r.text for rs in split.values() for r in rs) == sorted(r.text for r in requests)
    assert Counter(r.intent for r in split["test"]) == dict.fromkeys(INTENTS, 8)  # a fifth of each intent's
    assert Counter(r.intent for r in split["val"]) == dict.fromkeys(INTENTS, 4)  # and a tenth
    texts = {s: {r.text for r in rs} for s, rs in split.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"]
    templates = {s: {(r.intent, r.template) for r in rs} for s, rs in split.items()}
    shared = templates["train"] & templates["test"]
    assert 0.4 < len(shared) / len(templates["test"]) < 0.95  # most test phrasings are in training, not all
    assert [r.text for r in split_requests(requests, seed=0)["test"]] == [r.text for r in split["test"]]
    assert {r.text for r in split_requests(requests, seed=1)["test"]} != texts["test"]

    split = split_phrasings(requests, seed=0)
    templates = {s: {(r.intent, r.template) for r in rs} for s, rs in split.items()}
    assert not templates["train"] & templates["test"] and not templates["train"] & templates["val"]
    assert not templates["val"] & templates["test"]
    for s in ("train", "val", "test"):
        assert {r.intent for r in split[s]} == set(INTENTS)
    where = split_templates(seed=0)  # a fifth of each intent's phrasings for test, a tenth for validation
    assert all((len(w["test"]), len(w["val"]), len(w["train"])) == (4, 2, 14) for w in where.values())
    assert Counter(r.intent for r in split["test"])["pay_bill"] == 8  # two requests per phrasing at 40 per intent


def test_refill_writes_new_requests_from_the_same_phrasings_never_a_held_out_one():
    requests = make_requests(40)
    split = split_requests(requests, seed=0)
    held = [r.text for r in split["test"] + split["val"]]
    more = refill(split["train"], 5, seed=0, exclude=held)
    assert len(more) > 0.9 * 5 * len(split["train"])  # only sentences equal to a held-out one are dropped
    assert not {r.text for r in more} & set(held)
    assert {(r.intent, r.template) for r in more} == {(r.intent, r.template) for r in split["train"]}
    assert len({r.text for r in more}) > 0.5 * len(more)  # slot values and dressing vary
    assert [r.text for r in refill(split["train"], 5, seed=0, exclude=held)] == [r.text for r in more]
    assert refill(split["train"], 0) == []
    # what the scenario's heads train on: the calls' training requests rewritten, none for your own calls
    from mmhelpers.scenarios.customer_service.data import Call, CallSet, written_requests

    calls = CallSet([Call(r.text, r.intent, s, "v", phrasing=r.template) for s in split for r in split[s]], [], 8000)
    written = written_requests(calls, 3)
    assert len(written) > 0.9 * 3 * len(split["train"]) and not {t for t, _ in written} & set(held)
    assert written_requests(CallSet([Call("pay my bill", "pay_bill", "train", "v")], [], 8000)) == []


def test_the_calls_cache_key_follows_the_requests_and_the_digest_what_was_said(monkeypatch):
    from mmhelpers.scenarios.customer_service import data, requests

    key = data._key(EMBEDDED)
    assert key == data._key(EMBEDDED)
    monkeypatch.setitem(requests.TEMPLATES, "pay_bill", (*requests.TEMPLATES["pay_bill"][:-1], "I want to pay"))
    assert data._key(EMBEDDED) != key  # a changed phrasing builds new calls, never the cached ones
    calls = [data.Call("pay my bill", "pay_bill", "test", "v1"), data.Call("hi", "talk_to_agent", "train", "v2")]
    a = data.CallSet(calls, [], 8000)
    assert a.digest() == data.CallSet(list(calls), [], 8000).digest()
    assert a.digest() != data.CallSet(calls[::-1], [], 8000).digest()
    assert a.digest() != data.CallSet([calls[0], data.Call("hi", "talk_to_agent", "val", "v2")], [], 8000).digest()


def test_test_voices_are_never_heard_in_training():
    voices = speakers(8, 4, 2, seed=0)
    heard = {v.name for v in voices["train"] + voices["val"]}  # espeak accent+variant, Flite or Piper voice
    assert not heard & {v.name for v in voices["test"]}
    for v in voices["test"]:
        if v.engine == "espeak":
            accent, variant = v.name.split("+")
            assert accent in TEST_ACCENTS or variant in TEST_VARIANTS
        else:
            assert v.engine == "flite" and v.name in FLITE_TEST
    for v in voices["train"] + voices["val"]:
        if v.engine == "espeak":
            accent, variant = v.name.split("+")
            assert accent not in TEST_ACCENTS and variant not in TEST_VARIANTS
    engines = Counter(v.engine for v in voices["train"])
    assert engines == {"espeak": 8, "flite": 9, "piper": 2}
    assert len({v.id for v in voices["train"]}) == 19  # every training speaker distinct
    assert Counter(v.engine for v in voices["test"]) == {"espeak": 2, "flite": 3}


def test_plan_puts_every_test_request_at_every_snr():
    planned, _ = plan_calls(CallPlan(per_intent=40))
    test = [(r.text, snr) for r, split, _, _, snr in planned if split == "test"]
    texts = {t for t, _ in test}
    assert Counter(snr for _, snr in test) == {snr: len(texts) for snr in (0.0, 5.0, 10.0, 20.0, None)}
    assert len([1 for _, s, *_ in planned if s == "train"]) == 2 * 420


@needs_voices
def test_embedded_build_is_deterministic_cached_and_telephone_quality(tmp_path, monkeypatch):
    calls = build_calls(EMBEDDED, progress=False)
    assert calls.sr == 8000 and len(calls) == len(calls.waves)
    assert set(calls.labels.tolist()) == set(range(15))
    lengths = np.array([w.numel() for w in calls.waves]) / calls.sr
    assert 0.5 < lengths.min() and lengths.max() < 12
    assert all(float(w.abs().max()) > 0.01 for w in calls.waves)
    shards = sorted((tmp_path / "cache" / "calls").rglob("shard-*.npz"))
    assert shards
    again = build_calls(EMBEDDED, progress=False)  # from the cache
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(calls.waves, again.waves, strict=True))
    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "other_cache"))
    fresh = build_calls(EMBEDDED, progress=False)  # built again from nothing: the same audio
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(calls.waves, fresh.waves, strict=True))
    shards[0].write_bytes(shards[0].read_bytes()[:1000])  # a damaged shard (a cut zip) is rebuilt, not trusted
    monkeypatch.setenv("MMHELPERS_CACHE", str(tmp_path / "cache"))
    assert all(
        np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(calls.waves, build_calls(EMBEDDED, progress=False).waves, strict=True)
    )
    train_voices = {c.voice for c in calls.calls if c.split == "train"}
    assert not train_voices & {c.voice for c in calls.calls if c.split == "test"}
    assert {c.snr_db for c in calls.calls if c.split == "test"} == {0.0, None}


@needs_voices
def test_own_call_folder(tmp_path):
    from userdata import write_call_folder

    folder = write_call_folder(tmp_path / "my_calls")
    calls = load_call_folder(folder, progress=False)
    assert calls.intents == ("billing", "moving", "other", "sales", "technical") and calls.sr == 8000
    assert len(calls) == 100 and all(w.ndim == 1 for w in calls.waves)
    by_split = {s: {c.voice for c in calls.calls if c.split == s} for s in ("train", "val", "test")}
    assert len(by_split["test"]) == 1 and len(by_split["val"]) == 1 and not by_split["train"] & by_split["test"]
    assert calls.calls[0].text == "my bill is wrong"
    rows = list(csv.DictReader(open(folder / "metadata.csv")))
    rows[3]["split"] = "holdout"
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]) + ["split"])
        w.writeheader()
        w.writerows([{**r, "split": r.get("split", "train")} for r in rows])
    with pytest.raises(DataError, match=r"metadata.csv.*line 5.*'holdout'"):
        load_call_folder(folder, progress=False)


def test_empty_recording_is_named(tmp_path):
    import soundfile as sf

    (tmp_path / "a.wav").write_bytes(b"")
    sf.write(tmp_path / "b.wav", np.zeros(0, np.float32), 8000)
    Path(tmp_path / "metadata.csv").write_text("file_name,intent\nb.wav,billing\n")
    with pytest.raises(DataError, match="b.wav"):
        load_call_folder(tmp_path, progress=False)


@needs_voices
def test_voices_at_different_rates_in_one_shard_keep_their_own_rate():
    """espeak-ng speaks at 22.05 kHz and Flite at 16 kHz: built in one shard, each call lasts as long as its voice
    said it (a shared rate would play Flite's clips 1.4x too fast)."""
    from mmhelpers.scenarios.customer_service.data import _make_shard
    from mmhelpers.scenarios.customer_service.requests import Request
    from mmhelpers.speech import Voice, synthesize

    text = "I want to return my router"
    voices = [Voice("espeak", "en-us+m1", 160), Voice("flite", "rms", 160), Voice("piper", "joe", 175)]
    planned = [(Request(text, "return_device", 0), "train", v, None, None) for v in voices]
    built = _make_shard(planned, seed=0)
    for v, wave in zip(voices, built, strict=True):
        (alone,), sr = synthesize([text], v)
        assert abs(len(wave) / 8000 - len(alone) / sr) < 0.01, v
