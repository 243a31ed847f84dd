"""What callers say to a telephone help desk: 15 intents, each with many written requests.

Every intent has twenty phrasings (templates): ten written around slots (amounts, dates, plans, addresses, ...)
filled from short value lists, and ten free paraphrases of the same request (short and long, polite and curt,
some with slots too). Each request is dressed the way people talk on the phone: a greeting or none, fillers ("uh",
"I mean"), a "please" or a "thanks". Everything is drawn from a seed, so the same seed gives the same requests.
``split_requests`` draws a fifth of each intent's requests for test and a tenth for validation: a test request is
a sentence never seen in training, usually of a phrasing that is (other slot values, other dressing), and the
voices that speak it are held out (see ``voices``), the protocol of Fluent Speech Commands (Lugosch et al., 2019).
``split_phrasings`` holds whole phrasings out instead, the stricter "unseen utterance" protocol of Arora et al.
(2021); notebook 05 measures the text model under both. ``refill`` writes more training requests from the
training phrasings (text only).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

INTENTS = ("check_balance", "pay_bill", "dispute_charge", "update_payment_method", "reset_password",
           "cancel_service", "upgrade_plan", "report_outage", "slow_connection", "change_address", "track_order",
           "return_device", "activate_roaming", "opening_hours", "talk_to_agent")  # fmt: skip

SLOTS = {
    "amount": ("twenty dollars", "forty five dollars", "a hundred and twelve dollars", "eighty nine dollars",
               "sixty dollars", "thirty two fifty", "two hundred dollars", "fifteen dollars"),
    "date": ("last Tuesday", "the third of March", "yesterday", "the fifteenth", "last month", "June twenty first",
             "this morning", "Friday"),
    "plan": ("the unlimited plan", "the family plan", "the premium plan", "the five G plus plan",
             "the business plan", "the gold plan"),
    "address": ("twelve Oak Street", "forty five Maple Avenue", "seven River Road", "ninety Hill Lane",
                "three Park Crescent", "a flat on Station Road"),
    "order": ("order four four seven one", "my router order", "the phone I ordered last week", "order number nine two",
              "my new modem", "the headset I bought"),
    "country": ("Spain", "Japan", "Canada", "Mexico", "Italy", "Germany", "Brazil", "Thailand"),
    "device": ("router", "modem", "phone", "set top box", "tablet", "smart watch"),
    "service": ("internet", "TV package", "landline", "mobile line", "home phone", "broadband"),
    "method": ("credit card", "new debit card", "bank account", "PayPal account", "company card"),
    "day": ("Sunday", "Saturday", "a bank holiday", "Christmas Eve", "Monday", "weekends"),
}  # fmt: skip

TEMPLATES: dict[str, tuple[str, ...]] = {
    "check_balance": (
        "how much do I owe right now",
        "what is my current balance",
        "can you tell me my account balance",
        "I want to know how much is left to pay on my account",
        "how much was my last bill",
        "is my balance still {amount}",
        "what's the total due on my account as of {date}",
        "could you check what I owe on my {service}",
        "I'd like to hear my balance please",
        "do I have anything outstanding on my bill",
        "what do I owe you this month",
        "can you read me my balance",
        "I'd like to know what's on my account at the moment",
        "how much credit is left on my {service}",
        "balance please",
        "what does my account stand at after {date}",
        "tell me how much my next bill will be",
        "am I behind on any payments",
        "what's the amount due on my {service} account",
        "I just want to check my balance, nothing else",
    ),
    "pay_bill": (
        "I want to pay my bill",
        "I'd like to make a payment of {amount}",
        "can I pay {amount} towards my bill today",
        "let me pay off what I owe",
        "I need to settle my {service} bill",
        "please take {amount} from my {method} for the bill",
        "how do I pay my bill over the phone",
        "I want to clear my balance with my {method}",
        "put a payment through for my account",
        "I'm calling to pay the invoice from {date}",
        "I'd like to pay what's due",
        "can I make a payment now",
        "take the payment for this month please",
        "I want to pay {amount} by {method}",
        "I'm ringing to pay off my {service} bill",
        "pay my bill in full",
        "can I pay part of my bill now and the rest on {date}",
        "I got a reminder and I want to pay it",
        "process a payment on my account",
        "I'd like to pay the outstanding amount",
    ),
    "dispute_charge": (
        "there's a charge on my bill I don't recognise",
        "I was charged {amount} and I don't know why",
        "you billed me twice on {date}",
        "I want to dispute a charge of {amount}",
        "why is there an extra fee on my {service} bill",
        "this charge is wrong and I want it removed",
        "I never agreed to pay {amount}",
        "my bill is higher than it should be",
        "I was overcharged for my {service}",
        "please refund the charge from {date}",
        "what is this {amount} on my statement",
        "I've been charged for something I didn't order",
        "there's a mistake on my latest bill",
        "you took {amount} from my {method} without asking",
        "I want to complain about a charge",
        "this month's bill has a fee I never signed up for",
        "I'd like that charge taken off",
        "why did my bill go up by {amount}",
        "I was billed for {plan} but I'm not on it",
        "please look into a wrong charge from {date}",
    ),
    "update_payment_method": (
        "I need to change the card you have on file",
        "please update my payment details to my {method}",
        "I want to switch to paying by {method}",
        "my card expired and I need to add a new one",
        "can I change how I pay my bill",
        "replace my old card with my {method}",
        "I'd like to set up direct debit from my {method}",
        "remove my old card from the account",
        "the payment method on my account is out of date",
        "use my {method} for payments from now on",
        "I've got a new card, can you update it",
        "change my payment to {method}",
        "I want to pay with a different card from now on",
        "can you take payments from my {method} instead",
        "update the bank details on my account",
        "my card was stolen so I need to change it",
        "I'd like to stop paying by card and use my {method}",
        "the card number you have is old",
        "add my {method} as the way I pay",
        "switch my direct debit to a new bank",
    ),
    "reset_password": (
        "I forgot my password",
        "I can't log in to my account",
        "please reset my password",
        "my online account is locked",
        "I need a new password for the app",
        "the website says my password is wrong",
        "how do I get back into my account",
        "I didn't get the password reset email",
        "I'm locked out since {date}",
        "can you send me a link to change my password",
        "my password doesn't work any more",
        "I need to reset my login",
        "I keep getting an error when I sign in",
        "can you unlock my account please",
        "I can't remember my password for the website",
        "help me set a new password",
        "the app won't let me in",
        "I've tried my password three times and now I'm blocked",
        "how do I change my password",
        "the reset link you sent me has expired",
    ),
    "cancel_service": (
        "I want to cancel my {service}",
        "please close my account",
        "I'd like to end my contract",
        "I'm leaving and want to cancel everything",
        "stop my {service} at the end of the month",
        "how do I cancel my subscription",
        "I don't need the {service} any more, cancel it",
        "terminate my service from {date}",
        "I want to get out of {plan}",
        "cancel my line please, I'm moving to another provider",
        "I want to stop my service",
        "please cancel {plan}",
        "I'm not happy and I want to leave",
        "how much notice do I need to give to cancel",
        "close my {service} account please",
        "I'd like to disconnect my {service}",
        "end everything on my account from {date}",
        "I've found a cheaper deal so I'm cancelling",
        "don't renew my contract, I want out",
        "cancel the {service}, we're not using it",
    ),
    "upgrade_plan": (
        "I want to upgrade to {plan}",
        "can I get more data on my plan",
        "what would it cost to move to {plan}",
        "I'd like a faster package",
        "switch me to {plan} please",
        "I need a bigger plan for my {service}",
        "are there any better plans I can upgrade to",
        "add more minutes and data to my contract",
        "I'd like to go up a tier on my {service}",
        "I want {plan} instead of my current one",
        "do you have a plan with more data",
        "I keep running out of data, I need more",
        "move me up to {plan}",
        "what upgrades can I get",
        "I want a bigger bundle with my {service}",
        "can I get a better deal with more data",
        "I'm thinking of upgrading to {plan}",
        "upgrade me please",
        "I want faster speeds on a higher plan",
        "can I get unlimited calls added to my plan",
    ),
    "report_outage": (
        "my {service} is down",
        "there's no signal at all",
        "the whole street has no {service} since {date}",
        "nothing is working, the {device} shows a red light",
        "I have no dial tone",
        "is there an outage in my area",
        "my {service} stopped working completely",
        "the {device} won't connect at all",
        "we've had no service since {date}",
        "everything's been dead since the storm",
        "my {service} isn't working at all",
        "the {service} went off this morning and hasn't come back",
        "all the lights on the {device} are off",
        "I can't make any calls, the line is dead",
        "is something down in my area",
        "my neighbours have no {service} either",
        "no internet since {date}",
        "the {service} has completely gone",
        "I can't get online at all",
        "there's no connection whatsoever",
    ),
    "slow_connection": (
        "my internet is really slow",
        "the connection keeps dropping",
        "videos keep buffering all evening",
        "my speed is much lower than what I pay for",
        "the wifi is slow in every room",
        "pages take ages to load since {date}",
        "my {service} is working but crawling",
        "the {device} is connected but it's so slow",
        "downloads have been slow for a week",
        "my calls lag and the internet is sluggish",
        "my internet is so slow today",
        "the speed drops every evening",
        "websites take forever to load",
        "my video calls keep freezing",
        "the {device} keeps losing connection",
        "I'm only getting a fraction of my speed",
        "streaming is unwatchable, it's so slow",
        "the {service} is really sluggish since {date}",
        "my connection is very patchy",
        "why is my broadband so slow",
    ),
    "change_address": (
        "I'm moving to {address}",
        "please update my address to {address}",
        "I need to change my billing address",
        "I've moved house and need to update my details",
        "send my bills to {address} from now on",
        "can you move my {service} to {address}",
        "my new address is {address}",
        "I'm relocating on {date}, can you change my address",
        "update where you send my post",
        "the address on my account is wrong, it should be {address}",
        "I'm moving house next month",
        "my address has changed",
        "can you update my details, I live at {address} now",
        "I want my service moved to my new home",
        "please change the address on my account to {address}",
        "we're moving on {date} and need the {service} at the new place",
        "I've got a new address for you",
        "correct my street address please",
        "my post is going to my old house",
        "I need to update my home address",
    ),
    "track_order": (
        "where is {order}",
        "when will {order} arrive",
        "I haven't received {order} yet",
        "can you track {order} for me",
        "my delivery was due {date} and never came",
        "what's the status of my order",
        "has my {device} been shipped",
        "I'm still waiting for {order}",
        "is my parcel on its way",
        "can I get a tracking number for my {device}",
        "where's my delivery",
        "my {device} still hasn't turned up",
        "I ordered something on {date} and haven't heard anything",
        "can you tell me when {order} will be delivered",
        "has {order} been sent out yet",
        "tracking for my order please",
        "the courier never came with my {device}",
        "what's happening with {order}",
        "is my order delayed",
        "I want an update on my delivery",
    ),
    "return_device": (
        "I want to return my {device}",
        "how do I send back the {device}",
        "the {device} is faulty and I want to return it",
        "can I get a refund for {order}",
        "I'd like to send {order} back",
        "I need a returns label for the {device}",
        "the {device} you sent doesn't work, I'm returning it",
        "where do I drop off the old {device}",
        "I changed my mind about the {device}, can I return it",
        "I'm returning {order}, it arrived damaged",
        "I'd like to return the {device} you sent",
        "how do I get a refund on my {device}",
        "I want to send the {device} back for a refund",
        "can I swap the {device} for a different one",
        "the {device} doesn't suit me, I want to return it",
        "I need to return {order}",
        "what's your returns policy for a {device}",
        "can you arrange a pickup for the {device} I'm returning",
        "the {device} stopped working after a day, I want my money back",
        "I don't want {order}, how do I return it",
    ),
    "activate_roaming": (
        "I'm travelling to {country}, can you turn on roaming",
        "will my phone work in {country}",
        "please activate roaming on my line",
        "I need international roaming from {date}",
        "I'm going abroad next week, set up roaming",
        "how much does roaming cost in {country}",
        "switch on data abroad for my trip to {country}",
        "can I use my phone overseas",
        "enable roaming for my {service}",
        "I'll be in {country} for two weeks, I need roaming",
        "I'm off to {country}, will my phone work there",
        "turn on roaming please",
        "I need my phone to work abroad",
        "set up roaming before my trip on {date}",
        "can I use data while I'm in {country}",
        "add a travel pass for {country}",
        "does my plan include roaming",
        "I'm abroad and need roaming switched on",
        "what do I need to do to use my phone in {country}",
        "activate international calls and data",
    ),
    "opening_hours": (
        "what time do you open",
        "when does the store close",
        "are you open on {day}",
        "what are your opening hours",
        "is the shop open on {day}",
        "until what time can I call you",
        "when is the help desk open",
        "what are the hours for the branch on {address}",
        "are you closed on {day}",
        "what time does customer service open tomorrow",
        "are you open now",
        "what time do you close today",
        "when can I come in to the store",
        "what are the store hours on {day}",
        "how late is the shop open",
        "when do your phone lines open",
        "are you open over the holidays",
        "what time does the branch on {address} close",
        "do you open on {day}",
        "what hours is support available",
    ),
    "talk_to_agent": (
        "I want to speak to a real person",
        "let me talk to an agent",
        "can you put me through to someone",
        "operator please",
        "I need a human, not a machine",
        "connect me to customer service",
        "transfer me to a representative",
        "I'd rather talk to somebody",
        "get me a supervisor",
        "is there anyone I can speak to",
        "I want a person",
        "can I speak to someone please",
        "put me through to an operator",
        "I don't want a robot, give me a human",
        "get me an agent now",
        "I need to speak to a manager",
        "please connect me with a real agent",
        "can I talk to a person about my account",
        "representative",
        "let me speak to someone in customer support",
    ),
}

GREETINGS = ("", "", "", "hi", "hello", "hey", "good morning", "hi there", "yes hello", "okay so")
FILLERS = ("uh", "um", "I mean", "like", "you know", "so")
CLOSINGS = ("", "", "", "please", "thanks", "thank you", "if you can", "as soon as possible", "right now")
SPLITS = ("train", "val", "test")


def requests_digest() -> str:
    """A hash of everything requests are written from (phrasings, slot values, dressing): part of the calls'
    cache key, so calls built from other sentences never come back."""
    blob = [INTENTS, TEMPLATES, SLOTS, GREETINGS, FILLERS, CLOSINGS]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Request:
    """One written request: what the caller says, its intent, and the phrasing (template) it came from."""

    text: str
    intent: str
    template: int  # index into TEMPLATES[intent]
    core: str = ""  # the filled-in template before greetings, fillers and closings

    @property
    def label(self) -> int:
        return INTENTS.index(self.intent)


def fill(template: str, rng: np.random.Generator) -> str:
    """The template with each ``{slot}`` replaced by a value drawn from ``SLOTS``."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in SLOTS:
            raise KeyError(f"template {template!r} uses an unknown slot {{{name}}}; known: {sorted(SLOTS)}")
        return str(rng.choice(SLOTS[name]))

    return re.sub(r"\{(\w+)\}", value, template)


def dress(core: str, rng: np.random.Generator, p_filler: float = 0.35) -> str:
    """``core`` as said on the phone: maybe a greeting, a filler somewhere inside, a closing."""
    words = core.split()
    if rng.random() < p_filler and len(words) > 2:
        at = int(rng.integers(1, len(words)))
        words.insert(at, str(rng.choice(FILLERS)))
    parts = [str(rng.choice(GREETINGS)), " ".join(words), str(rng.choice(CLOSINGS))]
    return " ".join(p for p in parts if p)


def make_requests(per_intent: int = 40, seed: int = 0, max_tries: int = 50) -> list[Request]:
    """``per_intent`` distinct requests for every intent, spread evenly over its templates; deterministic in ``seed``.

    Requests of one intent differ in their words, not only in their greeting: two requests never share the same
    filled-in core sentence unless a template has no slots left to vary (then the dressing tells them apart)."""
    if per_intent < 1:
        raise ValueError(f"per_intent must be at least 1, got {per_intent}")
    rng = np.random.default_rng(seed)
    out: list[Request] = []
    for intent in INTENTS:
        templates = TEMPLATES[intent]
        seen: set[str] = set()
        cores: set[str] = set()
        for k in range(per_intent):
            t = k % len(templates)
            text = None
            for attempt in range(max_tries):
                core = fill(templates[t], rng)
                candidate = dress(core, rng)
                if candidate in seen or (core in cores and attempt < max_tries // 2):
                    continue  # a new wording first; a repeated one only with new dressing, after many tries
                text, kept = candidate, core
                break
            if text is None:
                raise RuntimeError(f"could not draw a new request for {intent!r} from template {templates[t]!r}")
            seen.add(text)
            cores.add(core)
            out.append(Request(text, intent, t, kept))
    return out


def split_templates(seed: int = 0, test: float = 0.2, val: float = 0.1) -> dict[str, dict[str, list[int]]]:
    """For every intent, which of its templates are train, val and test (whole phrasings held out): a ``test``
    and a ``val`` fraction of them, at least one each."""
    rng = np.random.default_rng(seed + 1)
    out: dict[str, dict[str, list[int]]] = {}
    for intent in INTENTS:
        n = len(TEMPLATES[intent])
        n_test, n_val = max(1, round(test * n)), max(1, round(val * n))
        perm = rng.permutation(n).tolist()
        out[intent] = {"test": sorted(perm[:n_test]), "val": sorted(perm[n_test : n_test + n_val]),
                       "train": sorted(perm[n_test + n_val :])}  # fmt: skip
    return out


def split_requests(requests: Sequence[Request], seed: int = 0, test: float = 0.2,
                   val: float = 0.1) -> dict[str, list[Request]]:  # fmt: skip
    """The scenario's split: a ``test`` and a ``val`` fraction of each intent's requests drawn at random (at least
    one each). A test request is a sentence no training request is, but its phrasing is usually in training with
    other slot values and dressing, as in Fluent Speech Commands (the voices are what is held out, see
    ``plan_calls``). ``split_phrasings`` is the stricter protocol."""
    rng = np.random.default_rng(seed + 1)
    out: dict[str, list[Request]] = {s: [] for s in SPLITS}
    for intent in INTENTS:
        mine = [r for r in requests if r.intent == intent]
        n_test, n_val = max(1, round(test * len(mine))), max(1, round(val * len(mine)))
        order = rng.permutation(len(mine)).tolist()
        where = {k: "test" for k in order[:n_test]} | {k: "val" for k in order[n_test : n_test + n_val]}
        for k, r in enumerate(mine):
            out[where.get(k, "train")].append(r)
    return out


def split_phrasings(requests: Sequence[Request], seed: int = 0) -> dict[str, list[Request]]:
    """Whole phrasings held out (``split_templates``): a template, and every request written from it, is in exactly
    one split, so a test request's wording was never seen in training (the phrasing study in notebook 05)."""
    where = split_templates(seed)
    out: dict[str, list[Request]] = {s: [] for s in SPLITS}
    for r in requests:
        split = next(s for s in SPLITS if r.template in where[r.intent][s])
        out[split].append(r)
    return out


def refill(requests: Sequence[Request], k: int, seed: int = 0, exclude: Sequence[str] = ()) -> list[Request]:
    """``k`` more written requests from the phrasing of each of ``requests``: its template filled with other slot
    values and dressed anew (text only, no audio: writing is free, speaking and recognising are not). Sentences
    in ``exclude`` (the validation and test requests) are never written; a repeat of another is allowed."""
    rng = np.random.default_rng(seed + 3)
    banned = set(exclude)
    out = []
    for r in requests:
        for _ in range(k):
            core = fill(TEMPLATES[r.intent][r.template], rng)
            text = dress(core, rng)
            if text not in banned:
                out.append(Request(text, r.intent, r.template, core))
    return out
