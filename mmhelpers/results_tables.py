"""The results tables of the README and the site, rendered from the committed results/<scenario>.json files.

    python scripts/results_table.py            # print every scenario's table
    python scripts/results_table.py --write    # rewrite the marked blocks in README.md

Each table sits in README.md between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``;
tests/test_packaging.py checks that the README matches the JSON files, and ``mmhelpers.site`` puts
the same tables on the site's landing page.
"""

from __future__ import annotations

import json
import re
import sys

from mmhelpers.paths import REPO_ROOT as ROOT

QTYPES = ("shape", "horizontal", "vertical", "closest_color", "furthest_shape", "count")  # as in sort_of_clevr
RELATIONAL_TYPES = ("closest_color", "furthest_shape", "count")


def runtime(r: dict) -> str:
    """The full run's wall time, and why it is long when the machine was busy (``runtime_note``)."""
    text = f"Full run: {r.get('runtime_s', float('nan')) / 60:.1f} min on 2 CPU cores"
    return text + f" ({r['runtime_note']})" if r.get("runtime_note") else text


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def av_digits(r: dict) -> str:
    """The audio-visual digits table: protocols x models, plus the missing-modality line."""
    rows = [
        _seeds_and_splits(r, "each seed also pairs the spoken digits with other MNIST images"),
        "",
        "| protocol | image only | audio only | best fusion (method) | target |",
        "|---|---|---|---|---|",
    ]
    targets = {
        "official": "image >= 98, audio >= 98, fusion >= 99.5",
        "speaker_independent": "audio mean >= 88, fusion >= best unimodal",
        "hard": "fusion >= best unimodal + 15",
    }
    for p in ("official", "speaker_independent", "hard"):
        s = r[p]
        worst = _seeded(r, p, "worst_speaker_audio", percent=True) if "worst_speaker_audio" in s else ""
        extra = f"; worst speaker, audio: {worst}" if worst else ""
        rows.append(
            f"| {p} | {_seeded(r, p, 'image', percent=True)} | {_seeded(r, p, 'audio', percent=True)}{extra} | "
            f"{_seeded(r, p, 'best_fusion', percent=True)} ({_methods(r, p, 'best_method')}) | {targets[p]} |"
        )
    rows.append("")
    rows.append(
        f"Missing modality, chosen model `{r['chosen_model']}` on the official split: audio missing "
        f"{_seeded(r, 'missing_modality', 'audio_missing', percent=True)} (image-only model "
        f"{_seeded(r, 'official', 'image', percent=True)}), image missing "
        f"{_seeded(r, 'missing_modality', 'image_missing', percent=True)} (audio-only model "
        f"{_seeded(r, 'official', 'audio', percent=True)}). {_runtimes(r)}; "
        f"reproduce with `{r['command']}`."
    )
    return "\n".join(rows)


def image_text(r: dict) -> str:
    """Retrieval both ways on the held-out Flickr8k images, the CCA baseline, and zero-shot Fashion-MNIST."""
    at = lambda d, k: _seeded(r, d, k)  # noqa: E731
    rows = [
        _seeds_and_splits(r, "each seed also draws its own 800/100/100 split of the photos, so the baselines vary too"),
        "",
        "| direction | R@1 | R@5 | R@10 | median rank | target |",
        "|---|---|---|---|---|---|",
        f"| text to image | {at('t2i', 'R@1')} | {at('t2i', 'R@5')} | {at('t2i', 'R@10')} | "
        f"{_seeded(r, 't2i', 'median_rank', digits=1)} | R@1 >= 0.33, R@5 >= 0.70 |",
        f"| image to text | {at('i2t', 'R@1')} | {at('i2t', 'R@5')} | {at('i2t', 'R@10')} | "
        f"{_seeded(r, 'i2t', 'median_rank', digits=1)} | reported |",
        "",
        f"Baselines on the same frozen features, text to image R@5: CCA {_seeded(r, 'cca_t2i_R@5')}, untrained "
        f"(random) projection {_seeded(r, 'random_projection_t2i_R@5')}, chance 0.05.",
    ]
    z = lambda k: _seeded(r, "zero_shot", k, percent=True)  # noqa: E731
    rows.append("")
    rows.append(
        f"Zero-shot Fashion-MNIST ({int(r['n_zero_shot_images'])} test images, prompt ensemble): 10-way "
        f"{z('all_10way')}% (chance 10%, 1-shot linear probe {z('linear_probe_1shot')}%); seen classes "
        f"({_classes(r, 'seen_classes')}) {z('seen')}% among themselves; unseen classes "
        f"({_classes(r, 'unseen_classes')}) {z('unseen')}% (chance {pct(r['zero_shot']['chance_unseen'])}%, 1-shot "
        f"probe {z('linear_probe_1shot_unseen')}%). {_runtimes(r)}; reproduce with `{r['command']}`."
    )
    return "\n".join(rows)


def mini_vlm(r: dict) -> str:
    """VQA by question family against the baselines, robustness, captions against nearest neighbour, KV cache."""
    v, c, k = r["vqa"], r["caption"], r["kv_cache"]
    at = lambda *path: _seeded(r, "vqa", *path, percent=True)  # noqa: E731
    rows = [
        _seeds_and_splits(r, "the seed also draws the caption split and initialises every model"),
        "",
        "| VQA (Sort-of-CLEVR, test scenes) | non-relational | relational | target |",
        "|---|---|---|---|",
        f"| mini VLM | {at('non_relational')} | {at('relational')} | >= 98 / >= 92 |",
        f"| question only | {at('question_only_non_relational')} | {at('question_only_relational')} | near chance |",
        f"| image only | {at('image_only_non_relational')} | {at('image_only_relational')} | reported |",
        "",
        "VQA by question type: "
        + ", ".join(f"{t.replace('_', ' ')} {at('by_type', t)}" for t in QTYPES)
        + f" ({v['steps']:g} training steps, {_train_minutes(r)})."
        + _per_seed(
            r, ("vqa", "non_relational"), ("vqa", "relational"), *(("vqa", "by_type", t) for t in RELATIONAL_TYPES)
        ),
        *(["", v_note] if (v_note := r.get("vqa_note")) else []),
    ]
    if "robustness_headline" in v:
        names = {"jpeg_75": "JPEG quality 75", "colour_shift_25": "colour shift up to 25 levels",
                 "noise_8": "pixel noise std 8", "antialias": "anti-aliased rendering"}  # fmt: skip
        rows += ["", "| the same test scenes under | non-relational | relational | target |", "|---|---|---|---|"]
        rows += [f"| {names[n]} | {at('robustness_headline', n, 'non_relational')} | "
                 f"{at('robustness_headline', n, 'relational')} | >= 95 / >= 85 |" for n in names]  # fmt: skip
    rows += [
        "",
        "| captioning (Flickr8k, held-out images) | BLEU-4 | CIDEr-D | test perplexity (with / without pre-training) |",
        "|---|---|---|---|",
    ]
    for name, d in r["fusion_designs"].items():
        rows.append(
            f"| {name} fusion ({d['parameters'] / 1e6:.2f} M parameters) | {_seeded(r, 'fusion_designs', name, 'bleu4')} | "
            f"{_seeded(r, 'fusion_designs', name, 'cider')} | {d['ppl_with_pretraining']:.1f} / "
            f"{d['ppl_without_pretraining']:.1f} |"
        )
    rows.append(
        f"| nearest-neighbour caption | {_seeded(r, 'caption', 'nn_bleu4')} | {_seeded(r, 'caption', 'nn_cider')} | |"
    )
    rows.append("")
    rows.append(
        f"Headline ({_methods(r, 'caption', 'chosen_fusion')} fusion, chosen per seed): BLEU-4 {c['bleu4']:.3f} and CIDEr-D {c['cider']:.3f} against the "
        f"nearest neighbour's {c['nn_bleu4']:.3f} and {c['nn_cider']:.3f}; pre-training lowers test perplexity from "
        f"{c['ppl_without_pretraining']:.1f} to {c['ppl_with_pretraining']:.1f}. KV-cached generation gives identical "
        f"tokens: {k['identical']}, {k['speedup']:.1f}x faster. {_runtimes(r)}; "
        f"reproduce with `{r['command']}`."
    )
    return "\n".join(rows)


def _train_minutes(r: dict) -> str:
    """The VQA training's engine time: ``8.8 min``, or each seed's where the file gathered several."""
    per = r.get("per_seed") or {}
    if len(per) < 2:
        return f"{r['vqa']['train_seconds'] / 60:.1f} min"
    each = " / ".join(f"{rec['vqa']['train_seconds'] / 60:.1f}" for rec in per.values())
    return f"{each} min per seed, a resumed run's summed over its sessions"


def _per_seed(r: dict, *paths: tuple[str, ...]) -> str:
    """`` Per seed: relational 95.1 / 70.2 / 96.0, ...`` (percent) where the file gathered several seeds."""
    per = r.get("per_seed") or {}
    if len(per) < 2:
        return ""
    parts = []
    for path in paths:
        values = []
        for rec in per.values():
            node = rec
            for key in path:
                node = node[key]
            values.append(pct(node))
        parts.append(f"{path[-1].replace('_', ' ')} {' / '.join(values)}")
    return f" Per seed ({', '.join(per)}): " + "; ".join(parts) + "."


def _spread(r: dict, *path: str) -> float | None:
    """The standard deviation over seeds of the number at ``path`` (None in a one-run or one-seed file)."""
    if len(r.get("seeds") or []) < 2:
        return None
    node = r.get("spread")
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def _seeded(r: dict, *path: str, percent: bool = False, digits: int = 3) -> str:
    """The number at ``path`` (a mean over seeds where the file has them) with its spread: ``0.281 ± 0.004``."""
    node = r
    for key in path:
        node = node[key]
    scale, fmt = (100, ".1f") if percent else (1, f".{digits}f")
    sd = _spread(r, *path)
    return f"{scale * node:{fmt}}" + ("" if sd is None else f" ± {scale * sd:{fmt}}")


def _seeds(r: dict) -> str:
    """Where the numbers come from: one run, or the seeds a file gathered (:mod:`mmhelpers.seed_results`)."""
    seeds = r.get("seeds")
    if not seeds:
        return "Numbers from one run (one seed)."
    return (
        f"Numbers are the mean ± standard deviation over {len(seeds)} training seeds ({', '.join(map(str, seeds))}), "
        "each a full run of the command below; the baselines do not depend on the seed."
    )


def _seeds_and_splits(r: dict, what_else: str) -> str:
    """:func:`_seeds`, for a scenario whose seed draws more than the initialisation (``what_else``)."""
    seeds = r.get("seeds")
    if not seeds:
        return "Numbers from one run (one seed)."
    n = int(r.get("threads") or 0)
    threads = f" on {n} thread{'s' if n != 1 else ''}" if n else ""
    if len(seeds) == 1:
        return f"Numbers from one seed ({seeds[0]}) so far, a full run of the command below{threads}; {what_else}."
    return (
        f"Numbers are the mean ± standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}), each a "
        f"full run of the command below{threads}; {what_else}."
    )


def _classes(r: dict, key: str) -> str:
    """The class list at ``key``; where seeds differ (each seed's split names other classes), each seed's."""
    per = r.get("per_seed") or {}
    lists = {s: rec[key] for s, rec in per.items()} or {"": r[key]}
    if len({tuple(v) for v in lists.values()}) == 1:
        return ", ".join(next(iter(lists.values())))
    return "; ".join(f"seed {s}: {', '.join(v)}" for s, v in lists.items())


def _methods(r: dict, *path: str) -> str:
    """A string leaf (a method's name) of every seed, once each in seed order: ``late`` or ``late / gated``."""
    names = []
    for rec in (r.get("per_seed") or {"": r}).values():
        node = rec
        for key in path:
            node = node[key]
        if node not in names:
            names.append(node)
    return " / ".join(names)


def _runtimes(r: dict) -> str:
    """The full run's wall time, per seed where the file gathered several (with a seed's ``runtime_note``), and their
    total when no seed's time carries a note."""
    per = r.get("per_seed") or {}
    times = {s: v["runtime_s"] for s, v in per.items() if v.get("runtime_s")}
    together = r.get("all_seeds")  # run_notebooks --seeds: the seeds ran as one command
    if together and sorted(str(s) for s in together["seeds"]) == sorted(per):
        each = " / ".join(f"{times[s] / 60:.1f}" for s in sorted(times, key=int))
        jobs, threads = int(together["jobs"]), _threads(int(together["threads_per_job"]))
        how = ("one after another" if jobs == 1 else f"{jobs} at a time") + f" with {threads} each"
        return (f"Full run: {together['wall_s'] / 60:.1f} min for all {len(together['seeds'])} seeds, {how} "
                f"({each} min per seed{', side by side' if jobs > 1 else ''}), on 2 CPU cores")  # fmt: skip
    if len(times) < 2:
        return runtime(r)
    notes = {s: f"; {per[s]['runtime_note']}" if per[s].get("runtime_note") else "" for s in times}
    each = ", ".join(f"{t / 60:.1f} min (seed {s}{notes[s]})" for s, t in times.items())
    # a time with a note is no full run's: no total then
    total = "" if any(notes.values()) else f", {sum(times.values()) / 60:.1f} min in all"
    return f"Full run: {each}{total}, on 2 CPU cores"


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def assistant(r: dict) -> str:
    """Captions against the mini VLM and nearest neighbour; answers against the question prior; format; int8; chat."""
    c, m, q, i8 = r["caption"], r["mini_vlm_caption"], r["questions"], r["int8"]
    # the mini VLM's seed 0 as its own section shows it now: its split of the photos is the one the assistant uses
    # (data_seed 0); its other seeds caption other photos
    committed = ROOT / "results" / "mini_vlm.json"
    if committed.exists():
        mini = json.loads(committed.read_text())
        m = mini.get("per_seed", {}).get("0", mini)["caption"]
    # the mini VLM's recipe with several training seeds on the assistant's split (scripts/mini_vlm_captions.py)
    same_file = ROOT / "results" / "mini_vlm_same_photos.json"
    same = json.loads(same_file.read_text()) if same_file.exists() else None
    p = q["prior"]
    a = lambda *k: _seeded(r, "questions", "accuracy", *k, percent=True)  # noqa: E731
    cl = lambda k: _seeded(r, "caption_loss", k, digits=2)  # noqa: E731
    read = r.get("region_phrases") or {}  # the scenes written as text (AssistantConfig.region_phrases)
    phrases = " + region phrases" if read else ""
    rows = [
        _seeds(r),
        "",
        "| captioning (Flickr8k, the mini VLM's 100 held-out images) | BLEU-4 | CIDEr-D | target |",
        "|---|---|---|---|",
        f"| assistant: SmolLM2-135M-Instruct (frozen) + projector + LoRA{phrases} | {_seeded(r, 'caption', 'bleu4')} | "
        f"{_seeded(r, 'caption', 'cider')} | above the mini VLM and nearest neighbour |",
        f"| mini VLM from scratch (03, committed, seed 0: the same photos) | {m['bleu4']:.3f} | {m['cider']:.3f} | |",
        *(
            [
                f"| mini VLM from scratch, seeds {', '.join(map(str, same['seeds']))} on the same photos "
                f"(`scripts/mini_vlm_captions.py`) | {same['mean']['bleu4']:.3f} ± {same['spread']['bleu4']:.3f} | "
                f"{same['mean']['cider']:.3f} ± {same['spread']['cider']:.3f} | |"
            ]
            if same
            else []
        ),
        f"| nearest-neighbour caption | {c['nn_bleu4']:.3f} | {c['nn_cider']:.3f} | |",
        "",
        "| questions (held-out, exact match, %) | assistant | question prior | target |",
        "|---|---|---|---|",
        f"| Sort-of-CLEVR non-relational | {a('non_relational')} | {pct(p['non_relational'])} | prior + 25 |",
        f"| Sort-of-CLEVR relational | {a('relational')} | {pct(p['relational'])} | reported |",
        f"| digits ({q['n_by_task']['digits']} test images) | {a('task:digits')} | {pct(p['task:digits'])} | reported |"
        if "n_by_task" in q
        else f"| digits | {a('task:digits')} | {pct(p['task:digits'])} | reported |",
        f"| answers in the requested format | {_seeded(r, 'questions', 'format_rate', percent=True)} | | counted |",
        "",
        "Sort-of-CLEVR by question type: "
        + ", ".join(f"{t.replace('_', ' ')} {a(t)}" for t in QTYPES if t in q["accuracy"])
        + ".",
        *(
            [
                "",
                "Region phrases (each image's colour regions written as text before the question): "
                f"{_seeded(r, 'region_phrases', 'objects_right', percent=True)} of the held-out scenes' objects "
                f"written right, {_seeded(r, 'region_phrases', 'scenes_exact', percent=True)} of the scenes exactly.",
            ]
            if read
            else []
        ),
        "",
        f"Held-out caption loss per reply token (teacher-forced): untrained projector {cl('untrained')}, "
        f"after stage 1 {cl('stage1')}, after stage 2 {cl('stage2')}. Decoding: {r['decoding']}.",
        "",
        f"int8 dynamic quantisation of the LM (CPU chat, batch of one): {i8['base_latency']['seconds_per_reply']:.2f} s "
        f"({i8['base_precision']}) -> {i8['int8_latency']['seconds_per_reply']:.2f} s per caption ({i8['speedup']:.1f}x), CIDEr-D "
        f"{c['cider']:.3f} -> {_seeded(r, 'int8', 'cider')}"
        + (f", BLEU-4 {c['bleu4']:.3f} -> {_seeded(r, 'int8', 'bleu4')}" if "bleu4" in i8 else "")
        + f". Chat example ({r['chat']['question']!r}): {r['chat']['reply']!r}. "
        f"Training ({r.get('train_precision', i8['base_precision'])}): stage 1 {r['stage_seconds']['1'] / 60:.1f} min, stage 2 "
        f"{r['stage_seconds']['2'] / 60:.1f} min, as the checkpoints recorded them (a stage loaded from the cache "
        f"keeps the time it took when it trained); {_threads(int(r['threads']))} in this run. {_runtimes(r)}; "
        f"reproduce with `{r['command']}`.",
    ]
    return "\n".join(rows)


def eval_count(split: str) -> int:
    """The training count of a config field stored as text, e.g. "(3000, 50, 50)" -> 3000."""
    return int(split.strip("()[] ").split(",")[0])


def assistant_gpu(r: dict) -> str:
    """The larger configuration on one GPU (scripts/assistant_gpu.py): one run, beside the question prior."""
    cfg, q, c, cl = r["config"], r["questions"], r["caption"], r["caption_loss"]
    acc, p = q["accuracy"], q["prior"]
    s1, s2 = int(cfg["stage1_steps"]), int(cfg["stage2_steps"])
    rows = [
        f"One run on one {r['device']} (training seed {r.get('seed', 0)}, {cfg['precision']}, "
        f"{int(cfg['side']) ** 2} visual tokens, LoRA on {cfg['lora_targets'].count('_proj')} projections): stage 1 "
        f"{s1} steps of {cfg['stage1_batch_size']} ({r['stage_seconds']['1']:.0f} s), stage 2 {s2} steps of "
        f"{cfg['stage2_batch_size']} ({r['stage_seconds']['2']:.0f} s) on the mixture (the 4,000 training captions, "
        f"{eval_count(cfg['scenes']) * int(cfg['questions_per_scene']):,} scene questions, "
        f"{eval_count(cfg['digits']):,} digits), {r['total_seconds'] / 60:.1f} min in all; scored on the CPU runs' "
        f"100 held-out photos and on {q['n']} held-out questions (other scenes and digits than the CPU runs', drawn "
        "the same way: the larger training sets come first in the same generated sequences).",
        "",
        "| GPU run (held-out; questions: exact match, %) | assistant | baseline |",
        "|---|---|---|",
        f"| captions BLEU-4 / CIDEr-D | {c['bleu4']:.3f} / {c['cider']:.3f} | nearest neighbour "
        f"{c['nn_bleu4']:.3f} / {c['nn_cider']:.3f} |",
        *(
            f"| {name} | {pct(acc[k])} | prior {pct(p[k])} |"
            for name, k in (
                ("Sort-of-CLEVR non-relational", "non_relational"),
                ("Sort-of-CLEVR relational", "relational"),
                ("digits", "task:digits"),
            )
        ),
        "",
        "By question type: "
        + ", ".join(f"{t.replace('_', ' ')} {pct(acc[t])} (prior {pct(p[t])})" for t in QTYPES if t in acc)
        + ".",
        "",
        f"Held-out caption loss per reply token: untrained {cl['untrained']:.2f}, after stage 1 {cl['stage1']:.2f}, "
        f"after stage 2 {cl['stage2']:.2f}. {r['note']} Reproduce with `{r['command']}`.",
    ]
    return "\n".join(rows)


MODERATION_ROWS = ("text only", "image only", "late", "concat", "gated", "low-rank bilinear", "cross-attention",
                   "zero-shot", "similarity", "aligned")  # fmt: skip


def content_moderation(r: dict) -> str:
    """AUROC and accuracy of every method on both negative sets; OCR; the moderation queue; runtime per seed."""
    auroc = lambda s, m: _seeded(r, s, "methods", m, "auroc")  # noqa: E731
    acc = lambda s, m: _seeded(r, s, "methods", m, "accuracy", percent=True)  # noqa: E731
    seeds = r.get("seeds") or []
    rows = [
        f"Mean ± standard deviation over {len(seeds)} training seeds ({', '.join(map(str, seeds))}) on one set of "
        f"posts (data seed {int(r['config'].get('data_seed', 0))}): each seed trains the aligner and every head anew."
        if len(seeds) > 1
        else "Numbers from one run (one seed).",
        "",
        "| method (test posts of 200 held-out photos) | AUROC, random negatives | AUROC, hard negatives "
        "| accuracy %, random | accuracy %, hard |",
        "|---|---|---|---|---|",
    ]
    for m in (m for m in MODERATION_ROWS if m in r["random"]["methods"]):
        rows.append(f"| {m} | {auroc('random', m)} | {auroc('hard', m)} | {acc('random', m)} | {acc('hard', m)} |")
    o = r["ocr"]
    fonts = ", ".join(f"{k} {v:.3f}" for k, v in o["by_font"].items())
    sizes = ", ".join(f"{k} {v:.3f}" for k, v in o["by_size"].items())
    per_seed = r.get("per_seed", {})
    times = [v.get("runtime_s") for v in per_seed.values() if v.get("runtime_s")]
    when = (f"Full run: {max(times) / 60:.1f} min from an empty cache (features and OCR), {min(times) / 60:.1f} min "
            "with them cached, on 2 CPU cores" if len(times) > 1 else runtime(r))  # fmt: skip
    rows += [
        "",
        f"Targets: text-only and image-only at most 0.60 (best: {_seeded(r, 'random', 'text')} and "
        f"{_seeded(r, 'random', 'image')} on random negatives); best fusion at least 0.90 on random negatives "
        f"({_seeded(r, 'random', 'best_fusion')}) and 0.75 on hard ones ({_seeded(r, 'hard', 'best_fusion')}), at "
        "least 0.2 above the best unimodal model on both.",
        "",
        f"OCR (RapidOCR PP-OCRv4, {int(o['n_posts'])} test posts): character error rate {_seeded(r, 'ocr', 'cer')}; "
        f"by font {fonts}; by text height (fraction of the shorter side) {sizes}; outlined "
        f"{o['by_outline']['outlined']:.3f}, plain {o['by_outline']['plain']:.3f}. Best method's AUROC with the "
        f"written text against the OCR text: random {_seeded(r, 'ocr', 'auroc_true_text_random')} -> "
        f"{_seeded(r, 'ocr', 'auroc_ocr_text_random')}, hard {_seeded(r, 'ocr', 'auroc_true_text_hard')} -> "
        f"{_seeded(r, 'ocr', 'auroc_ocr_text_hard')}.",
        "",
        f"Moderation queue at 90% recall (best method): precision {_seeded(r, 'precision_at_recall_90', 'random')} "
        f"(random negatives), {_seeded(r, 'precision_at_recall_90', 'hard')} (hard). Calibration of the best head "
        f"({r['calibration']['method']}): ECE {_seeded(r, 'calibration', 'ece_before')} as trained, "
        f"{_seeded(r, 'calibration', 'ece_after')} after temperature scaling on the validation posts. "
        f"{when}; {int(r['threads'])} threads; reproduce with `{r['command']}`.",
    ]
    return "\n".join(rows)


SERVICE_ROWS = ("true transcript", "recognised transcript", "audio", "audio (log-mel CNN)", "early", "late",
                "late + confidence", "gated", "cross-attention")  # fmt: skip


def customer_service(r: dict) -> str:
    """Intent accuracy by SNR for every model; WER on real speech beside pocketsphinx and the published figure;
    selective prediction, calibration and latency."""
    i = r["intent"]
    snrs = list(i["by_snr"])
    head = " | ".join("quiet" if k == "quiet" else f"{k} dB" for k in snrs)
    rows = [
        _seeds(r),
        "",
        f"| model (test calls: unseen voices, new sentences) | accuracy % | macro-F1 | {head} |",
        "|---|---|---|" + "---|" * len(snrs),
    ]
    for m in (m for m in SERVICE_ROWS if m in i["methods"]):
        by = " | ".join(_seeded(r, "intent", "by_snr", k, m, percent=True) for k in snrs)
        rows.append(f"| {m} | {_seeded(r, 'intent', 'methods', m, 'accuracy', percent=True)} | "
                    f"{_seeded(r, 'intent', 'methods', m, 'macro_f1')} | {by} |")  # fmt: skip
    gain = ", ".join(f"{k if k == 'quiet' else k + ' dB'} {100 * v:+.1f}" for k, v in i["fusion_gain_by_snr"].items())
    w, pub = r["wer"], r["wer_published"]["whisper_tiny_en"]
    n = r.get("wer_n", {})
    lat = r["latency_ms"]
    times = {s: v["runtime_s"] for s, v in r.get("per_seed", {}).items() if v.get("runtime_s")}
    when = ("Full run of the five notebooks: " + ", ".join(f"{t / 60:.1f} min (seed {s})" for s, t in times.items())
            + " on 2 CPU cores" if len(times) > 1 else runtime(r))  # fmt: skip
    study = i.get("phrasing_study") or {}
    splits = (f"The true-transcript model retrained on {len(study['data_seeds'])} other draws of the requests "
              f"(text alone, notebook 05 section 8): {pct(study['random requests']['mean'])} ± "
              f"{pct(study['random requests']['std'])}% with the requests split at random (the scenario's split), "
              f"{pct(study['held-out phrasings']['mean'])} ± {pct(study['held-out phrasings']['std'])}% with whole "
              "phrasings held out (the test voices are held out either way). " if study else "")  # fmt: skip
    rows += [
        "",
        f"Best fusion ({i['best_method']}) minus the better of the recognised transcript and audio, in points: {gain}. "
        f"{splits}Targets: the true transcript at least 97%; the best fusion above both the recognised-transcript and the "
        "audio model at 0 and 5 dB.",
        "",
        "| word error rate % | Asterisk prompts (8 kHz, one speaker) | LibriVox (Debian, 16 kHz) |",
        "|---|---|---|",
        f"| Whisper tiny.en (int8, greedy) | {pct(w['whisper_tiny_en']['asterisk'])} | "
        f"{pct(w['whisper_tiny_en']['librivox'])} |",
        f"| pocketsphinx 5 (en-us) | {pct(w['pocketsphinx']['asterisk'])} | {pct(w['pocketsphinx']['librivox'])} |",
        f"| published: tiny.en on LibriSpeech test-clean / test-other | {pct(pub['librispeech_test_clean'])} / "
        f"{pct(pub['librispeech_test_other'])} | |",
        "",
        f"Recordings: {int(n.get('asterisk', 0))} Asterisk prompts, {int(n.get('librivox', 0))} LibriVox utterances. "
        f"Selective prediction (best fusion): {_seeded(r, 'selective', 'coverage_at_99', percent=True)}% of the test "
        f"calls answered at 99% accuracy, the rest passed to a person. Calibration: ECE "
        f"{_seeded(r, 'calibration', 'ece')} as trained, {_seeded(r, 'calibration', 'ece_scaled')} after temperature "
        f"scaling on the validation voices. Latency of a live request on this CPU (median): recognition "
        f"{lat['recognition']:.0f} ms + features {lat['features']:.0f} ms + intent {lat['intent']:.1f} ms = "
        f"{lat['total']:.0f} ms. {when}; {int(r['threads'])} threads; reproduce with `{r['command']}`.",
    ]
    return "\n".join(rows)


RENDERERS = {"av_digits": av_digits, "image_text": image_text, "mini_vlm": mini_vlm, "assistant": assistant,
             "assistant_gpu": assistant_gpu,
             "content_moderation": content_moderation, "customer_service": customer_service}  # fmt: skip


def render(name: str) -> str:
    return RENDERERS[name](json.loads((ROOT / "results" / f"{name}.json").read_text()))


def available() -> list[str]:
    """The scenarios that have a committed results file, in the README's order."""
    return [name for name in RENDERERS if (ROOT / "results" / f"{name}.json").exists()]


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name in available():
        table = render(name)
        if "--write" in sys.argv:
            pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(\n<!-- /results:{name} -->)", re.S)
            text = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), text)
        else:
            print(f"## {name}\n{table}\n")
    if "--write" in sys.argv:
        readme.write_text(text)


if __name__ == "__main__":
    main()
