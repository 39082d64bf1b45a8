"""The audio scenario's target domain: speech under held-out REAL car noise.

``target_mix.speech`` chooses the target speech:

* ``tts`` (the default): words from TTS voices the source never uses
  (:func:`shiftlab.datasets.speech.heldout_tts_speech`: one espeak-ng voice per variant no
  source voice uses, the named flite voices and Debian festival voices; a voice sharing its
  identity -- espeak variant, or the recorded person behind a flite/festival voice -- with a
  source voice is an error). They replace the prepared speech's target rows. Only the
  noise differs in kind from the source (the voices are synthetic on both sides), so the
  mismatch the synthesis must close is the noise, and with ~75 voices (groups) dev and
  test have power.
* ``real``: the prepared speech's target rows as they are (trigger-rally's codrivers,
  real human speech recorded in a quiet room).

Every **target-domain** speech row is mixed with **target-domain** noise: the rows of
``data/prepared/noise`` with domain ``target`` (``prepare_noise.target_recordings``:
held out from every synthesis bank) matching ``recordings``. A TORCS engine loop among
them (recipe source ``torcs``, kind ``engine``) is not used raw: its car is driven through
``torcs_drives`` RPM trajectories of ``seconds_per_drive`` seconds
(:mod:`shiftlab.mixing.rpm`, the loop read from its original file as the synthesis bank
does; drive ``j`` of car ``c`` voices the car's loop ``j mod n`` with the recipe of
``seeding.sample_seed(seed, j, "target_drive", c)``: the target's own seeds), id
``torcs/<car>/drive<j>``, group ``torcs/<car>``. The SNR comes from ``target_snr_db``
(the target's own prior, not ``synth_mix.snr_db``). Source rows are returned untouched
(same values, same recipe), so the synthesis stage still sees clean source speech.

What is real and what is simulated: the noise is real recordings (real cars, re-pitched
along a drive); the speech is synthetic voices (``tts``) or real people (``real``); their
combination is simulated (nobody spoke in those cars). ``origin`` stays ``real`` (these
rows are the target as given, not synthesis). Each mixed row's ``recipe`` (the original
recipe JSON) gains a ``target_mix`` object: ``noise``, ``noise_group``,
``noise_recording``, ``offset``, ``length``, ``loops``, ``snr_db``, ``speech_gain``,
``noise_gain``, ``peak_limit``, ``seed`` (row seed), ``index`` and ``"simulated": true``.

Rows and randomness: target rows are numbered by id order (``p``); row ``p`` takes draw
``p`` of a :func:`shiftlab.mixing.bank.plan_draws` plan over the target noise
(``seeding.sample_rng(seed, 0, "target_plan")``, per-recording cap
``max_source_share``) and the SNR
``default_rng(seeding.sample_seed(seed, p, "target_mix")).uniform(*target_snr_db)``.
The mix is :func:`shiftlab.mixing.mix.mix` (exact power SNR, clipping guard), on the CPU.

The codriver check set (``codrivers: true``, :func:`make_codrivers`): with ``speech: tts``
the prepared speech's real target rows (trigger-rally's three codrivers, 3 x 25 pace-note
words by default) are not the target any more; they become a second, evaluation-only set
(``data/prepared/codrivers``, split ``codrivers`` of the audio splits): the same rows,
mixed exactly as the target is (:func:`make_target` with ``speech: real``: the same
held-out driven cars -- the same drives, ``target_drive`` seeds -- and SNR prior), but
with draws of their own: plan ``seeding.sample_rng(seed, 0, "codrivers_plan")``, SNR
``seeding.sample_seed(seed, p, "codrivers_mix")``, and ``"purpose": "codrivers"`` in their
``target_mix`` record. With ``speech: real`` the codrivers are the target itself (their
speakers are in train, dev and test), so there is no separate check set.

Leakage guard: if the synthesis bank is given, a target noise clip that is also in it
(same id, same group, or the same samples under another id) is an error -- a model must
never be scored on the noise it was trained with. ``bank_names`` does the same without
building any bank: the :class:`shiftlab.mixing.bank.Names` of each synthesis bank
section (``shiftlab prepare target`` resolves every ``synth_mix*`` section with
:func:`shiftlab.mixing.bank.names`); a target recording (or the loop a target drive
voices) that one of them draws from, or whose group (its car, for TORCS recordings) is one
of its groups, is a one-line error naming both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

from shiftlab import paramschema, seeding, store
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank as bank_mod
from shiftlab.mixing import mix as mix_mod

__all__ = ["DEFAULTS", "check_cfg", "make_target", "make_codrivers", "codrivers_reason", "target_noise"]

_KEY = "target_mix"

#: The ``target_mix`` params section and its ``tts`` block: the fields of :class:`shiftlab.paramschema.TargetMix`
#: and :class:`shiftlab.paramschema.TargetTts` (every knob's type, range and default).
TTS_DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.TargetTts)
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.TargetMix)

SPEECHES = ("tts", "real")
#: the seed purpose prefix of the codriver check set's draws (the target's is "target")
CODRIVERS = "codrivers"


def check_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``cfg`` over :data:`DEFAULTS` and validate it with :class:`shiftlab.paramschema.TargetMix` (errors
    name ``target_mix.<key>``); ``drive`` by :func:`shiftlab.mixing.rpm.check_ranges` (short overrides kept)."""
    from shiftlab.mixing import rpm

    c = paramschema.merge(paramschema.TargetMix, cfg, _KEY, DEFAULTS)
    rpm.check_ranges(c["drive"], f"{_KEY}.drive")
    c["drive"] = dict(c["drive"])
    return c


def _clip_hashes(a: bank_mod.BankArrays) -> dict[str, str]:
    return {a.ids[i]: hashlib.sha256(a.clip(i).tobytes()).hexdigest() for i in range(len(a.ids))}


def _check_disjoint(target: bank_mod.BankArrays, source: bank_mod.BankArrays) -> None:
    ids = set(source.ids)
    groups = set(source.groups)
    hashes = {h: cid for cid, h in _clip_hashes(source).items()}
    for i, cid in enumerate(target.ids):
        if cid in ids:
            raise ShiftlabError(f"{_KEY}: target noise {cid} is also in the synthesis bank (held-out noise must not "
                                f"be used for synthesis; remove it from synth_mix.bank.recordings)")
        if target.groups[i] in groups:
            raise ShiftlabError(f"{_KEY}: target noise {cid} shares group {target.groups[i]} with the synthesis bank")
        h = hashlib.sha256(target.clip(i).tobytes()).hexdigest()
        if h in hashes:
            raise ShiftlabError(f"{_KEY}: target noise {cid} has the same samples as bank clip {hashes[h]}")


def _check_names(target: bank_mod.BankArrays, bank_names: Mapping[str, bank_mod.Names],
                 recording: Mapping[str, str] | None = None) -> None:
    for section in sorted(bank_names):
        nm = bank_names[section]
        for i, cid in enumerate(target.ids):
            g = target.groups[i]
            rec = (recording or {}).get(cid, cid)
            if rec != cid and rec in nm.recordings:
                raise ShiftlabError(f"{_KEY}: target noise {cid} voices {rec}, which the {section} bank also draws "
                                    f"from (held-out noise must not be used for synthesis; remove it from "
                                    f"{section}.bank)")
            if cid in nm.recordings:
                raise ShiftlabError(f"{_KEY}: target noise {cid} is also in the {section} bank (held-out noise must "
                                    f"not be used for synthesis; remove it from {section}.bank)")
            if g in nm.groups:
                raise ShiftlabError(f"{_KEY}: target noise {cid} comes from {g}, which the {section} bank also draws "
                                    f"from (a held-out car or recording must not be used for synthesis)")


def _recipe(text) -> dict:
    try:
        r = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return r if isinstance(r, dict) else {}


def _tts_target(speech, c: dict):
    """``speech`` with its target rows replaced by held-out TTS voices (``speech: tts``)."""
    from shiftlab.datasets import schema
    from shiftlab.datasets import speech as speech_mod

    m = bank_mod._meta(speech, ("domain", "sampling_rate", "recipe"))
    src = np.flatnonzero(np.asarray(m["domain"]).astype(str) == "source")
    if not len(src):
        raise ShiftlabError(f"{_KEY}.speech: tts needs the source rows of the prepared speech (none found)")
    voices = set()
    for i in src:
        r = _recipe(m["recipe"][i])
        if r.get("source") == "tts" and r.get("engine") and r.get("voice"):
            voices.add((str(r["engine"]), str(r["voice"])))
    _, offs = bank_mod.audio_arrays(speech.select(src[:1].tolist()))
    sr, n = int(m["sampling_rate"][src[0]]), int(offs[1])
    t = c["tts"]
    tgt = speech_mod.heldout_tts_speech(
        schema.label_names(speech), sr, n, sorted(voices), t["espeak_variants"], t["flite_voices"],
        t["festival_voices"], t["speed"], t["pitch"], t["takes"], c["seed"], t["workers"], key=f"{_KEY}.tts")
    src_ids = set(speech.select(src.tolist())["id"])
    clash = sorted(src_ids & set(tgt["id"]))
    if clash:
        raise ShiftlabError(f"{_KEY}.tts: target row {clash[0]} has the id of a source row")
    src_groups = set(speech.select(src.tolist())["group"])
    clash = sorted(src_groups & set(tgt["group"]))
    if clash:
        raise ShiftlabError(f"{_KEY}.tts: target voice group {clash[0]} is also a source group")
    return schema.concat([bank_mod.take(speech, src.tolist()), tgt])


def _drive_torcs(tb, c: dict):
    """The target noise bank with each held-out TORCS car driven ``torcs_drives`` times (module docstring)."""
    from shiftlab.datasets import audio
    from shiftlab.mixing import rpm

    k = c["torcs_drives"]
    m = bank_mod._meta(tb, ("id", "group", "recipe"))
    ids = [str(i) for i in m["id"]]
    recs = [_recipe(r) for r in m["recipe"]]
    by_car: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        if k and r.get("source") == "torcs" and r.get("kind") == "engine" and r.get("car"):
            by_car.setdefault(str(r["car"]), []).append(i)
    if not by_car:
        return tb
    sr = int(tb[0]["sampling_rate"])
    cars = sorted(by_car)

    def work(car):
        loops = sorted(by_car[car], key=lambda i: ids[i])
        levels, out = {}, []
        for j in range(k):
            i = loops[j % len(loops)]
            if i not in levels:
                x, xsr = audio.read_audio(recs[i]["file"])
                levels[i] = rpm.LoopLevels(x, xsr, sr, ids[i])
            s = seeding.sample_seed(c["seed"], j, "target_drive", car)
            recipe = rpm.sample_recipe(s, c["seconds_per_drive"], sr, c["drive"], ids[i], None)
            out.append(dict(id=f"torcs/{car}/drive{j}", audio=rpm.render(recipe, levels[i]), sampling_rate=sr,
                            label="torcs_car", domain="target", origin="real", group=f"torcs/{car}",
                            recipe=store.recipe(source="torcs_drive", car=car, recording=ids[i],
                                                file=recs[i]["file"], drive_seed=s, index=j, drive=recipe)))
        return out

    driven = [row for rows in audio.map_ordered(work, cars, c["tts"]["workers"], "driving held-out TORCS cars",
                                                unit="car") for row in rows]
    keep = [i for i in range(len(ids)) if not any(i in v for v in by_car.values())]
    parts = [bank_mod.take(tb, keep)] if keep else []
    return bank_mod.combine(parts + [bank_mod._dataset(driven)])


def target_noise(noise, cfg: Mapping[str, Any] | None = None):
    """The target noise bank: the ``target``-domain rows of ``noise`` matching ``recordings``,
    each held-out TORCS car driven ``torcs_drives`` times (module docstring). Build it once and
    pass it as ``target_bank`` to :func:`make_target` / :func:`make_codrivers` to share the drives."""
    c = check_cfg(cfg)
    return _drive_torcs(bank_mod.from_noise(noise, c["recordings"], "target", where=_KEY), c)


def codrivers_reason(cfg: Mapping[str, Any] | None = None) -> str | None:
    """None when the codriver check set is made (``codrivers: true`` and ``speech: tts``),
    else why not (one line)."""
    c = check_cfg(cfg)
    if not c["codrivers"]:
        return f"{_KEY}.codrivers is false"
    if c["speech"] == "real":
        return (f"{_KEY}.speech is real: the codrivers are the target itself (their speakers are in train, dev and "
                f"test), so there is no separate check set")
    return None


def make_codrivers(speech, noise, cfg: Mapping[str, Any] | None = None, bank=None,
                   bank_names: Mapping[str, bank_mod.Names] | bank_mod.Names | None = None, target_bank=None):
    """The codriver check set: the real target rows of the prepared ``speech`` (trigger-rally's
    codrivers by default), mixed with the held-out target noise exactly as the target is
    (``speech: real``), with draws of their own (module docstring: ``codrivers_plan``,
    ``codrivers_mix``).

    Args as :func:`make_target` (``target_bank``: :func:`target_noise`'s bank, to reuse the
    target's drives). Returns an in-memory ``Dataset`` of the mixed target-domain rows only
    (ids, groups, labels of the prepared rows; origin ``real``). Call it when
    :func:`codrivers_reason` is None; it refuses ``speech: real``.
    """
    c = check_cfg(cfg)
    if c["speech"] == "real":
        raise ShiftlabError(f"{_KEY}.codrivers: {codrivers_reason(c)}")
    m = bank_mod._meta(speech, ("domain",))
    tgt = np.flatnonzero(np.asarray(m["domain"]).astype(str) == "target")
    if not len(tgt):
        raise ShiftlabError(f"{_KEY}.codrivers: the prepared speech has no real target rows (the codrivers) to mix; "
                            f"set {_KEY}.codrivers: false")
    return make_target(bank_mod.take(speech, tgt.tolist()), noise, {**c, "speech": "real"}, bank=bank,
                       bank_names=bank_names, purpose=CODRIVERS, target_bank=target_bank)


def make_target(speech, noise, cfg: Mapping[str, Any] | None = None, bank=None,
                bank_names: Mapping[str, bank_mod.Names] | bank_mod.Names | None = None, *,
                purpose: str = "target", target_bank=None):
    """``speech`` with every target-domain row mixed with held-out target-domain noise (module docstring).

    Args:
        speech: the prepared speech ``Dataset`` (source and target rows).
        noise: the prepared noise ``Dataset``; its ``target``-domain rows matching
            ``recordings`` are the target noise.
        cfg: the ``target_mix`` section (:data:`DEFAULTS`).
        bank: the synthesis noise bank (optional): a target recording found in it is an error.
        bank_names: ``{section: bank.Names}`` (or one ``Names``) of the synthesis banks
            (optional): a target recording or group they draw from is an error.
        purpose: the prefix of the seed purposes of the draws (``<purpose>_plan``,
            ``<purpose>_mix``); anything but ``target`` is also recorded in each row's
            ``target_mix`` record (:func:`make_codrivers` passes ``codrivers``).
        target_bank: the target noise bank from :func:`target_noise` (default: built here).

    Returns:
        A new in-memory ``Dataset`` with the rows, order and features of ``speech``;
        source rows byte-identical, target rows mixed (origin still ``real``).
    """
    from shiftlab.datasets import audio, schema

    c = check_cfg(cfg)
    seed = c["seed"]
    if not isinstance(purpose, str) or not purpose:
        raise ShiftlabError(f"{_KEY}: purpose must be a non-empty name, got {purpose!r}")
    tb = target_bank if target_bank is not None else target_noise(noise, c)
    tn = bank_mod.arrays(tb)
    tn_recording = {cid: str(_recipe(r).get("recording") or cid)
                    for cid, r in zip(tb["id"], bank_mod._meta(tb, ("recipe",))["recipe"])}
    if bank is not None:
        _check_disjoint(tn, bank_mod.arrays(bank))
    if bank_names is not None:
        _check_names(tn, {"synthesis": bank_names} if isinstance(bank_names, bank_mod.Names) else bank_names,
                     tn_recording)
    if c["speech"] == "tts":
        speech = _tts_target(speech, c)
    names = schema.label_names(speech)
    cols = ("id", "sampling_rate", "label", "domain", "origin", "group", "parent", "recipe")
    table = speech.select_columns(list(cols)).with_format("arrow")[:]
    m = {k: table.column(k).to_pylist() for k in cols}
    flat, offs = bank_mod.audio_arrays(speech)
    waves = [flat[offs[i] : offs[i + 1]] for i in range(len(speech))]
    tgt = [i for i, d in enumerate(m["domain"]) if d == "target"]
    if not tgt:
        raise ShiftlabError(f"{_KEY}: the speech has no target-domain rows to mix")
    rates = {int(m["sampling_rate"][i]) for i in tgt}
    if rates != {tn.sampling_rate}:
        raise ShiftlabError(
            f"{_KEY}: target speech at {sorted(rates)} Hz but the target noise at {tn.sampling_rate} Hz"
        )
    order = sorted(tgt, key=lambda i: m["id"][i])  # position p = rank of the id
    lens = np.array([len(waves[i]) for i in order], dtype=np.int64)
    if lens.min() < 1:
        raise ShiftlabError(f"{_KEY}: speech row {m['id'][order[int(np.argmin(lens))]]} has no samples")
    T = int(lens.max())
    plan = bank_mod.plan_draws(tn, T, len(order), seeding.sample_rng(seed, 0, f"{purpose}_plan"),
                               c["max_source_share"], c["min_segment_db"])
    lo, hi = c["target_snr_db"]
    row_seeds = [seeding.sample_seed(seed, p, f"{purpose}_mix") for p in range(len(order))]
    snr = np.array([float(np.random.default_rng(s).uniform(lo, hi)) for s in row_seeds])
    new_audio = list(waves)
    recipes = list(m["recipe"])
    for L in np.unique(lens):
        ps = np.flatnonzero(lens == L)
        s = np.stack([waves[order[p]] for p in ps]).astype(np.float32)
        nz = np.stack([
            tn.clip(int(plan.clip[p]))[(int(plan.offset[p]) + np.arange(int(L))) % int(tn.lengths[plan.clip[p]])]
            for p in ps
        ]).astype(np.float32)
        y, g1, g2 = mix_mod._mix(s, nz, snr[ps], c["peak_limit"], [m["id"][order[p]] for p in ps])
        for k, p in enumerate(ps):
            i = order[p]
            ci = int(plan.clip[p])
            new_audio[i] = y[k]
            entry = dict(
                noise=tn.ids[ci], noise_group=tn.groups[ci], offset=int(plan.offset[p]), length=int(L),
                noise_recording=tn_recording.get(tn.ids[ci], tn.ids[ci]),
                loops=int((int(plan.offset[p]) + int(L) - 1) // int(tn.lengths[ci])), snr_db=float(snr[p]),
                speech_gain=float(g1[k]), noise_gain=float(g2[k]), peak_limit=c["peak_limit"], seed=int(row_seeds[p]),
                index=int(p), simulated=True,
            )
            if purpose != "target":
                entry["purpose"] = purpose
            try:
                orig = json.loads(recipes[i]) if recipes[i] else {}
            except json.JSONDecodeError:
                orig = {"original": recipes[i]}
            if not isinstance(orig, dict):
                orig = {"original": orig}
            if "target_mix" in orig:
                raise ShiftlabError(f"{_KEY}: row {m['id'][i]} is already mixed (its recipe has target_mix)")
            recipes[i] = store.recipe(**orig, target_mix=entry)
    rows = [
        dict(id=m["id"][i], audio=new_audio[i], sampling_rate=m["sampling_rate"][i], label=names[m["label"][i]],
             domain=m["domain"][i], origin=m["origin"][i], group=m["group"][i], parent=m["parent"][i],
             recipe=recipes[i])
        for i in range(len(speech))
    ]
    return audio.build_dataset(rows, names)
