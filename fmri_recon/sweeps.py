"""Sweeps: a named grid over experiment keys, expanded into ordinary experiments (light: the
Snakefile imports it).

``sweeps: {name: {base: <experiment>, grid: {key: [values, ...]}}}`` makes one experiment per
point of the grid's product: the base experiment's overrides with the point's values. Each is
a normal experiment with its own stale-tracking, so adding a value to a grid runs only the new
points. A point is named as Snakemake's ``Paramspace`` names its instances, ``key~value`` joined
by ``_`` (keys sorted), after the sweep's name: ``vitb32_num_sessions~2_seed~7``. A point with
the settings of an experiment already defined (the base's own values, or a point that an earlier
sweep also has) is that experiment: nothing is trained twice.

Points that differ only in ``seed`` form a group: the sweep table gives their mean and spread.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable

SEED_KEY = "seed"
_VALUE = re.compile(r"^[A-Za-z0-9._+-]+$")   # no '~', so a name's key~value pairs stay apart


class SweepError(ValueError):
    """A sweep the config cannot expand; the message names the key at fault."""


def value_label(value, where: str) -> str:
    """How a grid value appears in a name: true/false, numbers as written, strings as they are
    (enum values such as train_sessions or residual_mlp too), lists joined by '-'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "-".join(value_label(v, where) for v in value)
    label = str(value)
    if not _VALUE.match(label):
        raise SweepError(f"config: {where} = {value!r} cannot be part of an experiment name "
                         "(letters, digits, '.', '_', '+' and '-' only)")
    return label


def point_name(sweep: str, point: dict, where: str = "") -> str:
    """``sweep_key~value_key~value`` (keys sorted); ``sweep`` alone for an empty point."""
    parts = [f"{k}~{value_label(point[k], f'{where}.{k}')}" for k in sorted(point)]
    return "_".join([sweep, *parts])


def points(grid: dict) -> list[dict]:
    """Every point of the grid's product, in the grid's value order."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def expand(sweeps: dict, experiments: dict, settings: Callable[[dict], dict], keys: set[str]) -> dict:
    """{sweep: [{"name", "point"}, ...]}, adding each new point's experiment to ``experiments``.

    ``settings(overrides)``: an experiment's full settings (defaults filled in); a point with the
    settings of an experiment already defined (the base, or a point of an earlier sweep) is that
    experiment, so nothing is trained twice. ``keys``: the keys an experiment may set.
    """
    out = {}
    for sweep, spec in sweeps.items():
        where = f"sweeps.{sweep}"
        base = spec["base"]
        if base not in experiments:
            raise SweepError(f"config: {where}.base = {base!r} is not an experiment (have {sorted(experiments)})")
        unknown = sorted(set(spec["grid"]) - keys)
        if unknown:
            raise SweepError(f"config: {where}.grid has {unknown}, which are not experiment keys")
        out[sweep] = []
        for point in points(spec["grid"]):
            name = point_name(sweep, point, f"{where}.grid")
            overrides = {**(experiments[base] or {}), **point}
            same = [e for e in experiments if settings(experiments[e] or {}) == settings(overrides)]
            if same:
                name = base if base in same else same[0]
            elif name in experiments:
                raise SweepError(f"config: {where} makes experiment {name!r}, which the config already defines "
                                 "with other settings; rename one")
            else:
                experiments[name] = overrides
            out[sweep].append({"name": name, "point": point})
    return out


def made_names(expanded: dict) -> set[str]:
    """The experiments that :func:`expand`'s result added (not those a point reused)."""
    return {m["name"] for sweep, members in expanded.items() for m in members
            if m["name"] == point_name(sweep, m["point"])}


def seed_groups(sweep: str, members: list[dict]) -> dict[str, list[dict]]:
    """{group name: members}: the points that differ only in their seed."""
    groups: dict[str, list[dict]] = {}
    for m in members:
        rest = {k: v for k, v in m["point"].items() if k != SEED_KEY}
        groups.setdefault(point_name(sweep, rest), []).append(m)
    return groups
