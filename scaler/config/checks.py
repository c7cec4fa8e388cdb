"""Checks that span keys: one pool's keys together (its mode, sizing, signal) and one section
against another. Tolerant of bad types, so they run on raw data as well as on parsed models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from pydantic import (
    BaseModel,
)

from scaler.config.values import (
    _ENV_NAME,
    _SIGNALS,
    PER_JOB_KEYS,
    WORKER_KEYS,
    _did_you_mean,
    _Found,
)
from scaler.fly.models import Guest
from scaler.fly.sizing import SizingError, guest_for
from scaler.telemetry.costs import MONTHLY_USD

BUDGET_KEY = "budget_per_hour"
"""The one ``[costs]`` key that is not a price: the global budget (USD per rolling hour)."""


def _signal_name(value: str) -> str:
    sig = value.upper()
    return sig if sig.startswith("SIG") else "SIG" + sig


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _app_problems(pool: Mapping[str, Any], given: set[str]) -> _Found:
    """``app`` or ``apps``: exactly one, and no app listed twice."""
    if "app" in given and "apps" in given:
        return [(("apps",), "'app' and 'apps' are both set; keep one: app = \"jobs\" for one "
                 "Fly app, or apps = [\"jobs-1\", \"jobs-2\"] to spread creates over several")]
    if "app" not in given and "apps" not in given:
        return [(("app",), "required key is missing: the pool's Fly app, app = \"my-jobs\" "
                 "(or apps = [\"jobs-1\", \"jobs-2\"] to spread creates over several)")]
    apps = pool.get("apps")
    if "apps" not in given or not isinstance(apps, list | tuple):
        return []
    slots = pool.get("warm_slots")
    if _is_int(slots) and slots > 0 and len(apps) > 1:
        return [(("apps",), "warm slots live in one app; with warm_slots use app = \"...\" (slots "
                 "are started, not created, so the create limit that apps spreads does not bind)")]
    if not apps:
        return [(("apps",), "an empty list; name at least one Fly app, or use app = \"...\"")]
    dupes = sorted({a for a in apps if isinstance(a, str) and apps.count(a) > 1})
    if dupes:
        return [(("apps",), f"app {dupes[0]!r} is listed twice; list each Fly app once")]
    return []


SUSPEND_MAX_MEMORY_MB = 2048
"""Fly suspends machines of at most 2 GB of memory (larger snapshots are refused or too slow)."""


def _suspend_problems(n: Any, guest: Guest) -> _Found:
    """``warm_suspended`` needs a machine Fly can suspend: at most 2 GB of memory (the pool's
    template sets no swap and no GPU, Fly's other conditions)."""
    if not _is_int(n) or n <= 0:
        return []
    if (guest.memory_mb or 0) > SUSPEND_MAX_MEMORY_MB:
        return [(("warm_suspended",),
                 f"Fly suspends machines of at most {SUSPEND_MAX_MEMORY_MB} MB; this pool's "
                 f"machines have {guest.memory_mb} MB: use a smaller size or warm_machines "
                 "(stopped) instead")]
    return []


def pool_apps(pool: Mapping[str, Any]) -> list[str]:
    """The Fly apps a raw pool names (``apps``, else ``app``), ignoring wrongly typed values."""
    apps = pool.get("apps")
    if isinstance(apps, list | tuple):
        return [a for a in apps if isinstance(a, str)]
    app = pool.get("app")
    return [app] if isinstance(app, str) else []


def _pool_problems(pool: Mapping[str, Any], given: set[str]) -> tuple[_Found, Guest | None]:
    """Checks across the keys of one pool, tolerant of wrongly typed values (which are reported
    elsewhere), so they also run on a pool that failed type validation. Returns the guest too."""
    from scaler.config.schema import PoolSpec  # the schema calls these checks: import at use

    defaults = {
        n: f.get_default(call_default_factory=True) for n, f in PoolSpec.model_fields.items()
    }

    def get(key: str) -> Any:
        return pool.get(key, defaults.get(key))

    problems: _Found = []
    queues = get("queues")
    if isinstance(queues, list | tuple):
        if not queues:
            problems.append(
                (("queues",), 'a pool needs at least one queue, e.g. queues = ["jobs"]')
            )
        for q in queues:
            if isinstance(q, str) and q[-3:] in (".DQ", ".XQ"):
                kind = "delay" if q.endswith(".DQ") else "dead-letter"
                problems.append(
                    (
                        ("queues",),
                        f"{q!r} is dramatiq's {kind} queue of {q[:-3]!r}; list {q[:-3]!r} "
                        "instead (the scaler watches both)",
                    )
                )
        dupes = sorted({q for q in queues if isinstance(q, str) and queues.count(q) > 1})
        if dupes:
            problems.append((("queues",), f"queue {dupes[0]!r} is listed twice"))
    problems.extend(_app_problems(pool, given))
    mode = get("mode")
    from scaler.config.github import github_pool_problems

    problems.extend(github_pool_problems({**pool, "mode": mode}, given))
    if mode in ("per-job", "github"):
        for key in sorted(given & set(WORKER_KEYS)):
            why = (
                " (a per-job machine never suspends: the next job would find the last one's "
                "memory)" if key == "warm_suspended" else ""
            )
            problems.append(
                ((key,), f"{key!r} applies to worker pools only{why}; remove it or set "
                 'mode = "worker"')
            )
        slots, cap = get("warm_slots"), get("max_machines")
        if _is_int(slots) and _is_int(cap) and cap >= 0 and slots > cap:
            problems.append(((("warm_slots",)), f"{slots} is above max_machines = {cap}; lower "
                             "it (a slot runs one job at a time, within the pool's cap)"))
        for key in ("slot_max_jobs", "slot_max_age"):
            if key in given and not slots:
                problems.append(((key,), f"{key!r} only applies with warm_slots > 0; set "
                                 "warm_slots or remove it"))
    elif mode == "worker":
        for key in sorted(given & set(PER_JOB_KEYS)):
            problems.append(
                (
                    (key,),
                    f'{key!r} applies to per-job pools only; remove it or set mode = "per-job"',
                )
            )
        cap = get("max_machines")
        for key in ("min_machines", "warm_machines", "warm_suspended"):
            n = get(key)
            # A negative cap is reported on its own key; a default the user never wrote is not
            # "above" anything they could lower.
            if _is_int(n) and _is_int(cap) and cap >= 0 and key in given and n > cap:
                problems.append(((key,), f"{n} is above max_machines = {cap}; lower it"))
        scale_on = get("scale_on")
        if scale_on == "prometheus":
            if not get("query"):
                problems.append(
                    (
                        ("query",),
                        'scale_on = "prometheus" needs a PromQL query, e.g. '
                        'query = "sum(my_backlog)"',
                    )
                )
            if get("target_per_machine") is None:
                problems.append(
                    (
                        ("target_per_machine",),
                        'scale_on = "prometheus" needs '
                        "target_per_machine, the query value one machine handles",
                    )
                )
        else:
            for key in ("query", "target_per_machine"):
                if key in given:
                    problems.append(
                        (
                            (key,),
                            f'{key!r} is only used with scale_on = "prometheus" '
                            f"(scale_on is {scale_on!r})",
                        )
                    )
        if "target_latency" in given and scale_on != "latency":
            problems.append(
                (
                    ("target_latency",),
                    "'target_latency' is only used with scale_on = "
                    f'"latency" (scale_on is {scale_on!r})',
                )
            )
    env = get("env")
    if isinstance(env, Mapping):
        for key in env:
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                problems.append((("env", str(key)), "not a valid environment variable name"))
            elif key == "FLY_API_TOKEN":
                problems.append(
                    (
                        ("env", key),
                        "the Fly token must never reach a machine; remove it "
                        "(runners do not need it)",
                    )
                )
    region = get("region")
    if isinstance(region, str):
        from scaler.fly.regions import region_problem

        wrong = region_problem(region)
        if wrong is not None:
            problems.append((("region",), wrong))
    sig = get("stop_signal")
    if isinstance(sig, str) and _signal_name(sig) not in _SIGNALS:
        problems.append(
            (
                ("stop_signal",),
                f"{sig!r} is not a known stop signal; use one of {', '.join(_SIGNALS)}",
            )
        )
    guest, guest_problems = _resolve_guest(get("size"), get("guest"))
    problems.extend(guest_problems)
    if mode == "worker" and guest is not None:
        problems.extend(_suspend_problems(get("warm_suspended"), guest))
    return problems, guest


def _resolve_guest(size: Any, spec: Any) -> tuple[Guest | None, _Found]:
    if isinstance(spec, BaseModel):
        spec = spec.model_dump()
    spec = spec if isinstance(spec, Mapping) else {}
    args = {k: spec.get(k) for k in ("cpus", "memory_mb", "cpu_kind")}
    typed = (
        (size is None or isinstance(size, str))
        and all(args[k] is None or _is_int(args[k]) for k in ("cpus", "memory_mb"))
        and (args["cpu_kind"] is None or isinstance(args["cpu_kind"], str))
    )
    if not typed:
        return None, []  # the type errors are reported by validation
    try:
        guest = guest_for(
            size=size,
            cpus=args["cpus"],
            memory_mb=args["memory_mb"],
            cpu_kind=args["cpu_kind"],
            field="guest",
        )
    except SizingError as exc:
        field = exc.field or "guest"
        # the preset is the pool's own `size` key, not a key of `guest`
        path: tuple[str | int, ...] = (
            ("size",) if field == "guest.size" else tuple(field.split("."))
        )
        text = str(exc)
        if text.startswith(field + "="):
            text = text[len(field) + 1 :]
        return None, [(path, text)]
    return guest, []

def _guest_dict(guest: Guest) -> dict[str, Any]:
    return {"cpu_kind": guest.cpu_kind, "cpus": guest.cpus, "memory_mb": guest.memory_mb}


def _guest_text(guest: Guest) -> str:
    return f"{guest.cpus} {guest.cpu_kind} CPU, {guest.memory_mb} MB"

# --- cross-section checks (tolerant of bad types, so they run on raw data too) -------------------


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _cross_problems(data: Mapping[str, Any]) -> _Found:
    """Checks of one section against another (pools, apps, caps, http), on raw data."""
    from scaler.config.schema import ScalerSettings  # see _pool_problems

    problems: _Found = []
    global_cap = _table(data, "scaler").get(
        "max_machines", ScalerSettings.model_fields["max_machines"].default
    )
    apps = _table(data, "apps")
    pools = data.get("pools")
    if not isinstance(pools, list | tuple):
        pools = []
    prom = _table(data, "prometheus")
    names: dict[str, int] = {}
    queues: dict[str, tuple[int, str]] = {}
    used_apps: set[str] = set()
    for i, pool in enumerate(pools):
        if not isinstance(pool, Mapping):
            continue
        name = pool.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(
                    (
                        ("pools", i, "name"),
                        f"{name!r} is already the name of "
                        f"pools[{names[name]}]; pool names must be unique",
                    )
                )
            else:
                names[name] = i
        qs = pool.get("queues")
        if isinstance(qs, list | tuple):
            for q in dict.fromkeys(x for x in qs if isinstance(x, str)):
                if q in queues:
                    j, other = queues[q]
                    problems.append(
                        (
                            ("pools", i, "queues"),
                            f"queue {q!r} is already served by "
                            f"pool {other!r} (pools[{j}]); one queue belongs to one pool",
                        )
                    )
                else:
                    queues[q] = (i, str(name))
        # A pool that did not write max_machines takes the default, which the tighter cap simply
        # limits: only a cap the user wrote can be "above" another.
        cap = pool.get("max_machines")
        pool_app_names = pool_apps(pool)
        used_apps.update(pool_app_names)
        if _is_int(cap) and _is_int(global_cap) and cap > global_cap:
            problems.append(
                (
                    ("pools", i, "max_machines"),
                    f"{cap} is above scaler.max_machines ="
                    f" {global_cap}, so it can never be reached; lower it or raise "
                    "scaler.max_machines",
                )
            )
        # Over several apps the pool cap can be reached through all of them together.
        app_caps = [
            c.get("max_machines") if isinstance(c := apps.get(a), Mapping) else None
            for a in pool_app_names
        ]
        if _is_int(cap) and app_caps and all(_is_int(c) for c in app_caps):
            room = sum(c for c in app_caps if _is_int(c))
            if cap > room:
                where = (
                    f"apps.{pool_app_names[0]}.max_machines = {room}" if len(app_caps) == 1
                    else f"the sum of its apps' max_machines ({room})"
                )
                problems.append(
                    (
                        ("pools", i, "max_machines"),
                        f"{cap} is above {where}, so it can never be reached; lower one",
                    )
                )
        if pool.get("scale_on") == "prometheus" and not prom.get("url"):
            problems.append(
                (
                    ("pools", i, "scale_on"),
                    '"prometheus" needs [prometheus] url = "http://prometheus:9090"',
                )
            )
    from scaler.config.github import github_section_problems

    problems.extend(github_section_problems(data, list(pools)))
    problems += _budget_problems(data, apps, pools)
    for size in _table(data, "costs"):
        if size != BUDGET_KEY and size not in MONTHLY_USD:
            hint = (
                _did_you_mean(str(size), list(MONTHLY_USD))
                or " (use a preset name such as 'shared-cpu-1x' or 'performance-2x')"
            )
            problems.append((("costs", size), f"unknown size{hint}"))
    for app, cfg in apps.items():
        if not isinstance(cfg, Mapping):
            continue
        cap = cfg.get("max_machines")
        if _is_int(cap) and _is_int(global_cap) and cap > global_cap:
            problems.append(
                (
                    ("apps", app, "max_machines"),
                    f"{cap} is above scaler.max_machines"
                    f" = {global_cap}, so it can never be reached; lower it",
                )
            )
        if app not in used_apps:
            hint = _did_you_mean(str(app), sorted(used_apps))
            problems.append(
                (
                    ("apps", app),
                    f"no pool uses app {app!r}{hint}; remove the section or fix the name",
                )
            )
    return problems


def _budget_problems(
    data: Mapping[str, Any], apps: Mapping[str, Any], pools: list[Any] | tuple[Any, ...]
) -> _Found:
    """Budgets per rolling hour: positive, and none above a wider one (it could never bind)."""
    problems: _Found = []
    glob = _table(data, "costs").get(BUDGET_KEY)
    if isinstance(glob, int | float) and glob <= 0:
        problems.append(
            (("costs", BUDGET_KEY), f"{glob} allows no machine at all; use a positive USD "
             "amount per hour, or remove the key for no budget")
        )
        glob = None

    def above(path: tuple[str | int, ...], value: object, limit: object, where: str) -> None:
        if isinstance(value, int | float) and isinstance(limit, int | float) and value > limit:
            problems.append(
                (path, f"{value} is above {where} = {limit}, so it can never be reached; "
                 "lower it or remove it")
            )

    for app, cfg in apps.items():
        if isinstance(cfg, Mapping):
            above(("apps", app, BUDGET_KEY), cfg.get(BUDGET_KEY), glob, f"costs.{BUDGET_KEY}")
    for i, pool in enumerate(pools):
        if not isinstance(pool, Mapping):
            continue
        value, several = pool.get(BUDGET_KEY), pool.get("apps")
        pool_apps = several if isinstance(several, list | tuple) else [pool.get("app")]
        for pool_app in pool_apps:  # over several apps, each app's budget applies
            app_cfg = apps.get(pool_app) if isinstance(pool_app, str) else None
            if isinstance(app_cfg, Mapping):
                above(("pools", i, BUDGET_KEY), value, app_cfg.get(BUDGET_KEY),
                      f"apps.{pool_app}.{BUDGET_KEY}")
        above(("pools", i, BUDGET_KEY), value, glob, f"costs.{BUDGET_KEY}")
    return problems
