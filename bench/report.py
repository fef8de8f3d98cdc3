"""The closing markdown table: our measured line next to the old service's published figure."""

from __future__ import annotations

from collections.abc import Callable

# Copied from issue 6's table: the OLD service's published figures, measured there (FastAPI +
# APScheduler + Redis, same 2-core machine, medians of 3). Reference text, not re-measured here.
OLD_SERVICE = {
    "create": "~920 req/s, p99 40 ms (one core saturated); issue 14, 16 connections: 707 req/s, p99 71 ms",
    # Issue 14's table, measured beside this service on this machine (one run).
    "create64": "772 req/s (issue 14)",
    "stack": "issue 14: restart to healthy 3.65 s at 10,000 pending; idle 58 MB RSS",
    "batch": "no batch endpoint",
    "burst1000": "~500 delivered, ~500 silently never sent",
    "burst5000": "~400 delivered, ~4,600 never sent; issue 14: loses 4,517",
    "steady_200x30": "all delivered; lateness p50 2 ms, p99 5 ms, max 11 ms",
    "slow": "50 delivered, 450 never sent",
    "restart": "restart to ready 34 s (100,000 pending)",
    "list": "listing them 1.9 s (100,000 pending)",
    "memory": "+1.3 KB of RAM per message (+127 MB at 100,000)",
}

Row = tuple[str, str, bool | None]  # this service, target, met (None: nothing to meet)


def _t(ms: float | None) -> str:
    """A duration for reading: milliseconds below a second, seconds above."""
    if ms is None:
        return "n/a"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.1f} ms"


# Issue 14: twice the old service's rate at the same connections, p99 no worse than its 71 ms.
CREATE_TARGETS = {16: 2 * 707, 64: 2 * 772}
OLD_CREATE_P99_MS = 71


def _create(r: dict) -> Row:
    ok = r["statuses"].get("200", 0) == r["requests"] and not r["errors"]
    goal = CREATE_TARGETS.get(r["clients"])
    target = f"≥ {goal:,} req/s, p99 ≤ {OLD_CREATE_P99_MS} ms (issue 14)" if goal else "stated"
    text = (f"{r['req_per_s']} req/s ({r['clients']} connections), p50 {_t(r['p50_ms'])}, p99 {_t(r['p99_ms'])}; "
            f"web CPU {r['web_cpu_ms_per_req']} ms per create"
            + ("" if ok else f", statuses {r['statuses']} errors {r['errors']}"))
    return text, target, (ok and r["req_per_s"] >= goal and r["p99_ms"] <= OLD_CREATE_P99_MS) if goal else None


def _batch(r: dict) -> Row:
    ok = r["statuses"].get("200", 0) == r["requests"] and not r["errors"]
    return (f"{r['messages_per_s']:,} messages/s ({r['batch_size']:,} per request, {r['clients']} clients), "
            f"p50 {_t(r['p50_ms'])}, p99 {_t(r['p99_ms'])}; web CPU {r['web_cpu_ms_per_message']} ms per message"
            + ("" if ok else f", statuses {r['statuses']} errors {r['errors']}"),
            "≥ 20,000 messages/s (issue 13)", ok and r["messages_per_s"] >= 20_000)


def _delivered(r: dict) -> str:
    return f"{r['delivered']:,}/{r['messages']:,} delivered, {r['duplicates']} duplicates"


def _burst(r: dict) -> Row:
    last = r["last_arrival_after_instant_s"]
    text = (f"{_delivered(r)}; last {last} s after the instant; lateness p50 {_t(r['lateness_p50_ms'])}, "
            f"p99 {_t(r['lateness_p99_ms'])}")
    whole = not r["undelivered"] and not r["duplicates"] and last is not None
    if r["messages"] >= 50_000:  # issue 14: at least 2,500 messages/s
        rate = r["messages"] / last if last else 0
        return f"{text}; {rate:,.0f} messages/s", "all once, ≥ 2,500 messages/s (issue 14)", whole and rate >= 2500
    # Issue 14: 5,000 within 1.5 s with the default INFO logs (issue 6 asked for 3 s).
    bound = 1.5 if r["messages"] == 5000 else 3
    return text, f"all once, last ≤ {bound} s after", whole and last <= bound


def _stack(r: dict) -> Row:
    text = (f"from the command: first start {r['first_start_ready_s']} s, restart {r['restart_ready_s']} s with "
            f"{r['pending']:,} pending, stop {r['restart_stop_s']} s; idle PSS {r['pss_mb_total']} MB "
            f"(RSS {r['rss_mb_total']} MB), {r['profile']} profile")
    met = r["restart_ready_s"] <= 2 and r["restart_stop_s"] <= 2 and r["pss_mb_total"] <= 250
    return text, "restart ≤ 2 s, stop ≤ 2 s, PSS ≤ 250 MB (issue 14)", met


def _slow(r: dict) -> Row:
    done = r["all_delivered_after_instant_s"]
    return (f"{_delivered(r)}; all done {done} s after the instant; peak {r['peak_inflight']} in flight",
            "all within 2 s (≥ 50 in flight)",
            not r["undelivered"] and not r["duplicates"] and done is not None and done <= 2)


def _steady(r: dict) -> Row:
    text = (f"{_delivered(r)}; lateness p50 {_t(r['lateness_p50_ms'])}, p99 {_t(r['lateness_p99_ms'])}, "
            f"max {_t(r['lateness_max_ms'])}; worker RSS {r.get('worker_rss_mb_min')}–{r.get('worker_rss_mb_max')} MB")
    if r["rate"] != 200:
        return text, "worker memory bounded (stated)", None
    met = (not r["undelivered"] and not r["duplicates"] and r["lateness_p50_ms"] <= 3
           and r["lateness_p99_ms"] <= 10 and r["lateness_max_ms"] <= 50)
    return text, "all; p50 ≤ 3 ms, p99 ≤ 10 ms, max ≤ 50 ms", met


def _restart(r: dict) -> Row:
    return (f"ready {r['ready_s']} s with {r['pending']:,} pending (empty: {r['ready_s_empty']} s)",
            "≤ 5 s (issue: at 1,000,000)", r["ready_s"] <= 5)


def _list(r: dict) -> Row:
    return (f"first page ({r['items']} items) {_t(r['median_ms'])} at {r['pending']:,} pending",
            "≤ 50 ms (issue: at 1,000,000)", r["median_ms"] <= 50)


def _memory(r: dict) -> Row:
    return (f"web {r['web_rss_mb_empty']}→{r['web_rss_mb_pending']} MB ({r['web_rss_mb_delta_pct']:+}%), "
            f"worker {r['worker_rss_mb_empty']}→{r['worker_rss_mb_pending']} MB "
            f"({r['worker_rss_mb_delta_pct']:+}%) at {r['pending']:,} pending",
            "within 10% of empty (issue: at 1,000,000)",
            abs(r["web_rss_mb_delta_pct"]) <= 10 and abs(r["worker_rss_mb_delta_pct"]) <= 10)


def _large_payloads(r: dict) -> Row:
    pss = (f", PSS {r['worker_pss_mb_baseline']} → {r['worker_pss_mb_peak']} MB"
           if "worker_pss_mb_peak" in r else "")
    ok = not r["undelivered"] and not r["duplicates"] and r["bodies_whole"]
    return (f"{_delivered(r)}; last {r['last_arrival_after_instant_s']} s after the instant; worker RSS "
            f"{r['worker_rss_mb_baseline']} → {r['worker_rss_mb_peak']} MB peak (+{r['worker_rss_mb_peak_delta']}), "
            f"{r['worker_rss_mb_after']} MB after{pss}",
            "all once; worker memory stated (issue 10)", None if ok else False)


DESCRIBE: dict[str, Callable[[dict], Row]] = {
    "create": _create, "batch": _batch, "burst": _burst, "slow": _slow, "steady": _steady,
    "restart": _restart, "list": _list, "memory": _memory, "large_payloads": _large_payloads, "stack": _stack,
}


def _old_figure(name: str) -> str:
    # The same load handed over another way (":db") compares with the same old figure.
    return OLD_SERVICE.get(name.removesuffix("_db"), "not measured")


def markdown_table(results: list[dict], *, database: str, commit: str) -> str:
    lines = [
        f"Commit {commit}, database: {database}. The old service's column is its published",
        "figure from issue 6, not re-measured here.",
        "",
        "| Scenario | Old service (published, issue 6) | This service (measured) | Target | Met |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        name = r["scenario"]
        if "error" in r:
            lines.append(f"| {name} | {_old_figure(name)} | failed: {r['error']} | | no |")
            continue
        describe = next(f for prefix, f in DESCRIBE.items() if name.startswith(prefix))
        ours, target, met = describe(r)
        mark = "—" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {_old_figure(name)} | {ours} | {target} | {mark} |")
    return "\n".join(lines)
