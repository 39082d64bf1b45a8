"""The embedded default's target domain: real speech under held-out real car noise.

The project's real target speech (trigger-rally's codrivers) was recorded in a quiet
room, so on its own it does not sound "recorded in a car". :func:`make_target` gives the
embedded default a mismatch worth fixing: every **target-domain** speech row is mixed
with a **target-domain** noise recording (``data/prepared/noise`` rows with domain
``target``: trigger-rally's engine, gravel and wind, held out from the synthesis bank),
at an SNR drawn from ``target_snr_db``. Source rows are returned untouched (same values,
same recipe), so the synthesis stage still sees clean source speech.

What is real and what is simulated: both ingredients are real recordings (real human
speech, real recorded vehicle noise), so ``origin`` stays ``real``; their combination
is simulated (the speakers were not in a car). Each mixed row's ``recipe`` (the original
recipe JSON) gains a ``target_mix`` object: ``noise``, ``noise_group``, ``offset``,
``length``, ``loops``, ``snr_db``, ``speech_gain``, ``noise_gain``, ``peak_limit``,
``seed`` (row seed), ``index`` and ``"simulated": true``.

Rows and randomness: target rows are numbered by id order (``p``); row ``p`` takes draw
``p`` of a :func:`shiftlab.mixing.bank.plan_draws` plan over the target noise
(``seeding.sample_rng(seed, 0, "target_plan")``, per-recording cap
``max_source_share``; the default spreads the rows evenly over the recordings) and the
SNR ``default_rng(seeding.sample_seed(seed, p, "target_mix")).uniform(*target_snr_db)``.
The mix is :func:`shiftlab.mixing.mix.mix` (exact power SNR, clipping guard), on the CPU.

Leakage guard: if the synthesis bank is given, a target noise recording that is also in
it (same id, same group, or the same samples under another id) is an error -- a model
must never be scored on the noise it was trained with. ``bank_names`` does the same
without building any bank: the :class:`shiftlab.mixing.bank.Names` of each synthesis
bank section (``shiftlab prepare target`` resolves every ``synth_mix*`` section with
:func:`shiftlab.mixing.bank.names`); a target recording that one of them draws from, or
whose group (its car, for TORCS recordings) is one of its groups, is a one-line error
naming both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

from shiftlab import seeding, store
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank as bank_mod
from shiftlab.mixing import mix as mix_mod

__all__ = ["DEFAULTS", "check_cfg", "make_target"]

_KEY = "target_mix"

#: Defaults of the ``target_mix`` params section.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "target_snr_db": [0.0, 20.0],  # SNR range (uniform) of the target mixes, dB
    "recordings": ["*"],  # fnmatch patterns over the target-domain noise ids
    "max_source_share": 0.34,  # per-recording cap of the target draws (3 recordings: even split)
    "min_segment_db": bank_mod.SILENCE_DB,
    "peak_limit": 1.0,
}


def check_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``cfg`` over :data:`DEFAULTS` and validate it (errors name ``target_mix.<key>``)."""
    c = bank_mod._merge(DEFAULTS, cfg, _KEY)
    v = c["seed"]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ShiftlabError(f"{_KEY}.seed: must be an integer >= 0, got {v!r}")
    c["seed"] = int(v)
    c["target_snr_db"] = mix_mod._snr_range(c["target_snr_db"], f"{_KEY}.target_snr_db")
    c["peak_limit"] = mix_mod._peak_limit(c["peak_limit"], f"{_KEY}.peak_limit")
    rec = c["recordings"]
    if isinstance(rec, str):
        rec = [rec]
    if not isinstance(rec, (list, tuple)) or not rec or not all(isinstance(p, str) and p for p in rec):
        raise ShiftlabError(f"{_KEY}.recordings: must be a non-empty list of id patterns, got {c['recordings']!r}")
    c["recordings"] = list(rec)
    c["max_source_share"] = bank_mod._number(c, "max_source_share", _KEY, 0.0, 1.0, lo_open=True)
    c["min_segment_db"] = bank_mod._number(c, "min_segment_db", _KEY, -200.0, 0.0)
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


def _check_names(target: bank_mod.BankArrays, bank_names: Mapping[str, bank_mod.Names]) -> None:
    for section in sorted(bank_names):
        nm = bank_names[section]
        for i, cid in enumerate(target.ids):
            g = target.groups[i]
            if cid in nm.recordings:
                raise ShiftlabError(f"{_KEY}: target noise {cid} is also in the {section} bank (held-out noise must "
                                    f"not be used for synthesis; remove it from {section}.bank)")
            if g in nm.groups:
                raise ShiftlabError(f"{_KEY}: target noise {cid} comes from {g}, which the {section} bank also draws "
                                    f"from (a held-out car or recording must not be used for synthesis)")


def make_target(speech, noise, cfg: Mapping[str, Any] | None = None, bank=None,
                bank_names: Mapping[str, bank_mod.Names] | bank_mod.Names | None = None):
    """``speech`` with every target-domain row mixed with held-out target-domain noise (module docstring).

    Args:
        speech: the prepared speech ``Dataset`` (source and target rows).
        noise: the prepared noise ``Dataset``; its ``target``-domain rows matching
            ``recordings`` are the target noise.
        cfg: the ``target_mix`` section (:data:`DEFAULTS`).
        bank: the synthesis noise bank (optional): a target recording found in it is an error.
        bank_names: ``{section: bank.Names}`` (or one ``Names``) of the synthesis banks
            (optional): a target recording or group they draw from is an error.

    Returns:
        A new in-memory ``Dataset`` with the rows, order and features of ``speech``;
        source rows byte-identical, target rows mixed (origin still ``real``).
    """
    from shiftlab.datasets import audio, schema

    c = check_cfg(cfg)
    seed = c["seed"]
    tn = bank_mod.arrays(bank_mod.from_noise(noise, c["recordings"], "target", where=_KEY))
    if bank is not None:
        _check_disjoint(tn, bank_mod.arrays(bank))
    if bank_names is not None:
        _check_names(tn, {"synthesis": bank_names} if isinstance(bank_names, bank_mod.Names) else bank_names)
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
    plan = bank_mod.plan_draws(tn, T, len(order), seeding.sample_rng(seed, 0, "target_plan"),
                               c["max_source_share"], c["min_segment_db"])
    lo, hi = c["target_snr_db"]
    row_seeds = [seeding.sample_seed(seed, p, "target_mix") for p in range(len(order))]
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
                loops=int((int(plan.offset[p]) + int(L) - 1) // int(tn.lengths[ci])), snr_db=float(snr[p]),
                speech_gain=float(g1[k]), noise_gain=float(g2[k]), peak_limit=c["peak_limit"], seed=int(row_seeds[p]),
                index=int(p), simulated=True,
            )
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
