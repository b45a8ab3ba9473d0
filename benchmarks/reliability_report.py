"""The reliability campaign's targets (issue 10's "Done when"), its report and its soak plot."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.fuzzing import EXPECTED
from service.admission import BYTES_PER_PIXEL
from service.settings import GatewayConfig

MIN_FUZZ = 10_000
STALL_MS = 50  # a parallel health check while tiny files of 40 Mpx and hint floods are processed
RSS_SETTLED = 0.20  # the gateway's RSS a minute after a burst, against its baseline
RECOVERY_S = 2.0  # first success after Triton is ready again
RSS_GROWTH = 0.05  # gateway RSS growth over the soak, after its first minute
METRICS_GROWTH = 0.01  # /metrics growth over 300 calls with new 10 kB variant names


@dataclass(frozen=True)
class Targets:
    target: str
    measured: str
    met: bool

    @staticmethod
    def evaluate(res: dict) -> list[Targets]:
        fz, tk, dr, sk = res["fuzz"], res["triton_kill"], res["drain"], res["soak"]
        st, bu, fr, npb = res["loop_stall"], res["burst"], res["triton_frozen"], res["not_protobuf"]
        ceiling = bu["baseline_mb"] + BYTES_PER_PIXEL * GatewayConfig().pixels_in_flight / 2**20
        np_codes = {code for tally in npb.values() for code in tally}
        answers = {k: v for part in fz["tally"].values() for k, v in part.items()}
        n = sum(fz["tally"]["request"].values()) + sum(fz["tally"]["raw"].values())
        bad = {k: v for k, v in answers.items() if k not in EXPECTED}
        sizes = fz["metrics_bytes"]
        down_codes = set(tk["codes_while_down"])
        after = {k: v for k, v in dr["codes_after_sigterm"].items() if k not in ("OK", "UNAVAILABLE")}
        leftovers = {"after cleanup": tk["orphans_after_cleanup"], "after shutdown": res["after_shutdown"]}
        return [
            Targets(
                f">= {MIN_FUZZ:,} fuzzed calls",
                f"{n:,} calls + {sum(fz['tally']['stream_item'].values()):,} stream items",
                n >= MIN_FUZZ,
            ),
            Targets(
                "fuzz: every answer OK or the caller's mistake (no UNKNOWN, INTERNAL, timeouts)",
                ", ".join(f"{k} {v}" for k, v in bad.items()) or "none other",
                not bad,
            ),
            Targets(
                "fuzz: every stream ends with one answer per item",
                f"{len(fz['stream_faults'])} faults",
                not fz["stream_faults"],
            ),
            Targets(
                "fuzz: gateway alive and serving afterwards",
                f"alive {fz['gateway_alive']}, serves {fz['serves_after']}",
                fz["gateway_alive"] and fz["serves_after"],
            ),
            Targets(
                f"/metrics bounded: grows < {METRICS_GROWTH:.0%} over 300 calls with new 10 kB variant names",
                f"{sizes['after'] / 1e3:.1f} -> {sizes['after_label_attack'] / 1e3:.1f} kB",
                sizes["after_label_attack"] < (1 + METRICS_GROWTH) * sizes["after"],
            ),
            Targets(
                f"loop: a parallel health check answers within {STALL_MS} ms under tiny 40-Mpx files and hint floods",
                f"max {st['under_bombs']['max_ms']:.0f} ms, p99 {st['under_bombs']['p99_ms']:.0f} ms "
                f"(idle max {st['idle']['max_ms']:.0f} ms)",
                st["under_bombs"]["max_ms"] <= STALL_MS,
            ),
            Targets(
                "loop: the bombs answered OK, the hint floods INVALID_ARGUMENT",
                "; ".join(f"{k}: {_codes(v)}" for k, v in st["codes"].items()),
                set(st["codes"]["hint_flood"]) == {"INVALID_ARGUMENT"}
                and all(set(v) == {"OK"} for k, v in st["codes"].items() if k != "hint_flood"),
            ),
            Targets(
                f"burst of {bu['n']} maximum-pixel requests: gateway peak RSS under the stated ceiling",
                f"{bu['baseline_mb']:.0f} -> peak {bu['peak_mb']:.0f} MB (ceiling {ceiling:.0f} MB); "
                f"{_codes(bu['codes'])}",
                bu["peak_mb"] <= ceiling and set(bu["codes"]) == {"OK"},
            ),
            Targets(
                f"burst: RSS within {RSS_SETTLED:.0%} of its baseline {bu['settle_s']:.0f} s after",
                f"{bu['after_mb']:.0f} MB ({bu['after_mb'] / bu['baseline_mb'] - 1:+.0%})",
                bu["after_mb"] <= (1 + RSS_SETTLED) * bu["baseline_mb"],
            ),
            Targets(
                f"Triton frozen {fr['freeze_s']:.0f} s: calls without a deadline end within the "
                f"{fr['bound_s']:g} s bound",
                f"longest {fr['longest_call_s']:.1f} s; {_codes(fr['codes_during'])}",
                fr["longest_call_s"] <= fr["bound_s"] + 2,
            ),
            Targets(
                "Triton frozen: health NOT_SERVING, then SERVING after it thaws",
                f"NOT_SERVING after {fr['not_serving_after_s']:.1f} s; SERVING "
                f"{fr['serving_again_after_thaw_s']:.1f} s after SIGCONT",
                fr["not_serving_after_s"] <= 5,
            ),
            Targets(
                "non-protobuf bytes to health and reflection: INVALID_ARGUMENT",
                "; ".join(f"{k.rsplit('/', 1)[-1]}: {_codes(v)}" for k, v in npb.items()),
                np_codes == {"INVALID_ARGUMENT"},
            ),
            Targets(
                "Triton down: only UNAVAILABLE",
                ", ".join(f"{k} {v}" for k, v in tk["codes_while_down"].items()),
                down_codes <= {"UNAVAILABLE"},
            ),
            Targets(
                f"first success <= {RECOVERY_S:.0f} s after Triton is ready",
                f"{tk['first_success_after_ready_s']:.2f} s",
                tk["first_success_after_ready_s"] <= RECOVERY_S,
            ),
            Targets(
                "no orphaned backend processes or shared memory",
                "; ".join(f"{k}: {v['processes']} processes, {v['shm']} regions" for k, v in leftovers.items()),
                all(v["processes"] == 0 and v["shm"] == 0 for v in leftovers.values()),
            ),
            Targets(
                "SIGTERM under load: 0 accepted calls lost, exit 0",
                f"{dr['accepted_lost']} of {dr['accepted']} lost, exit {dr['exit_code']}",
                dr["accepted_lost"] == 0 and dr["exit_code"] == 0,
            ),
            Targets(
                "SIGTERM: calls after it get OK or UNAVAILABLE",
                ", ".join(f"{k} {v}" for k, v in dr["codes_after_sigterm"].items()) or "none",
                not after,
            ),
            Targets(
                "soak: 0 errors",
                f"{sum(v for k, v in sk['codes'].items() if k != 'OK')} of {sk['calls']:,}",
                set(sk["codes"]) == {"OK"},
            ),
            Targets(
                f"soak: gateway RSS growth < {RSS_GROWTH:.0%} after the first minute",
                f"{sk['gateway_rss_growth']:+.1%} (peak {sk.get('gateway_rss_peak_growth', 0):+.1%}, trend "
                f"{sk.get('gateway_rss_trend_mb_per_min', 0):+.2f} MB/min)",
                sk["gateway_rss_growth"] < RSS_GROWTH,
            ),
        ]


def _codes(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in d.items()) or "-"


def render(res: dict) -> str:
    fz, tk, dr, sk, cfg = res["fuzz"], res["triton_kill"], res["drain"], res["soak"], res["config"]
    st, bu, fr = res["loop_stall"], res["burst"], res["triton_frozen"]
    targets = [Targets(**t) for t in res["targets"]]
    lines = [
        "# Reliability campaign",
        "",
        f"`python -m benchmarks.reliability` on a local stack (the wheel's Triton, the shipped model repository, "
        f"the gateway with default options); {res['machine']['cpus']} CPUs.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *[f"| {t.target} | {t.measured} | {'✅ met' if t.met else '❌ missed'} |" for t in targets],
        "",
        f"{sum(t.met for t in targets)} of {len(targets)} met.",
        "",
        "## Fuzzing",
        "",
        f"{cfg['fuzz']:,} Colorize calls from {cfg['concurrency']} callers ({cfg['raw']} of them bytes that are not "
        f"a ColorizeRequest) and {cfg['streams']} ColorizeStreams of 1-5 items, every field random "
        f"(`benchmarks/fuzzing.py`: bad and huge images, header-only decompression bombs, NaN and out-of-range "
        f"hints, unknown enums, 10 kB variant names), in {fz['seconds']:.0f} s.",
        "",
        "| sent as | answers |",
        "|---|---|",
        *[f"| {k} | {_codes(v)} |" for k, v in fz["tally"].items()],
        "",
        f"/metrics: {fz['metrics_bytes']['before']:,} bytes before, {fz['metrics_bytes']['half']:,} halfway, "
        f"{fz['metrics_bytes']['after']:,} after, {fz['metrics_bytes']['after_label_attack']:,} after 300 more calls "
        f"with new 10 kB variant names (they all share the label `unknown`).",
        "",
        "## Soak",
        "",
        f"Capacity with {cfg['concurrency']} callers back to back: {res['capacity_rps']:.1f} req/s. Soak: "
        f"{sk['rate']:.1f} req/s open-loop ({cfg['soak_load']:.0%}) for {cfg['soak_minutes']} min, "
        f"{sk['calls']:,} calls: {_codes(sk['codes'])}. ![soak](soak.png)",
        "",
        "| minute | calls | errors | p50 ms | p99 ms | gateway RSS MB | Triton RSS MB |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {m['minute']} | {m['calls']} | {m['errors']} | {m['p50_ms']:.0f} | {m['p99_ms']:.0f} | "
            f"{m['gateway_rss_mb']:.1f} | {m['triton_rss_mb']:.0f} |"
            for m in sk["minutes"]
        ],
        "",
        "## Hostile load (`benchmarks/hostile.py`)",
        "",
        f"- Loop stall: a health check back to back from another process, idle (p50 {st['idle']['p50_ms']:.1f} ms, "
        f"max {st['idle']['max_ms']:.0f} ms) and while 40-Mpx 1-bit PNGs "
        f"({st['bytes']['one_bit_png']:,} bytes), 40-Mpx WebPs ({st['bytes']['webp']:,} bytes) "
        f"and {st['bytes']['hint_flood'] / 2**20:.0f}-MB hint lists were sent two at a time (p50 "
        f"{st['under_bombs']['p50_ms']:.1f} ms, p99 {st['under_bombs']['p99_ms']:.0f} ms, "
        f"max {st['under_bombs']['max_ms']:.0f} ms over {st['under_bombs']['n']} checks).",
        f"- Burst: {bu['n']} requests of {bu['pixels'] / 1e6:.0f} Mpx ({bu['sketch_bytes']:,}-byte "
        f"1-bit PNGs, JPEG answers at their size) at once, done in {bu['seconds']:.1f} s: gateway RSS "
        f"{bu['baseline_mb']:.0f} MB before, {bu['peak_mb']:.0f} MB at the peak, "
        f"{bu['after_mb']:.0f} MB {bu['settle_s']:.0f} s after.",
        f"- Triton frozen (SIGSTOP of its process group) for {fr['freeze_s']:.0f} s under 4 callers "
        f"without a deadline: {fr['calls_during']} calls then, {_codes(fr['codes_during'])}; "
        f"the longest took {fr['longest_call_s']:.1f} s (the gateway's bound: "
        f"{fr['bound_s']:g} s).",
        "",
        "## Triton SIGKILLed under load",
        "",
        "4 callers; Triton killed with SIGKILL, left down 3 s, cleaned up (`stop_triton`: the stubs of its "
        "process group and its shared memory), started again on the same ports.",
        "",
        f"- Left by the kill: {tk['left_by_kill']['processes']} backend stub processes, "
        f"{tk['left_by_kill']['shm']} shared-memory regions; after the cleanup: "
        f"{tk['orphans_after_cleanup']['processes']} and {tk['orphans_after_cleanup']['shm']}.",
        f"- Calls in flight at the kill: {_codes(tk['codes_in_flight_at_kill'])}; sent while down: "
        f"{_codes(tk['codes_while_down'])}.",
        f"- Restart to ready: {tk['restart_to_ready_s']:.1f} s; first success "
        f"{tk['first_success_after_ready_s']:.2f} s after ready (the gateway re-checks Triton's health every second).",
        "",
        "## Gateway SIGTERMed under load",
        "",
        f"{cfg['concurrency']} callers; SIGTERM; the gateway drained in {dr['drain_s']:.2f} s and exited "
        f"{dr['exit_code']}. Calls sent before the signal: {_codes(dr['codes_accepted'])}; after it: "
        f"{_codes(dr['codes_after_sigterm'])} (UNAVAILABLE is a refusal a client retries elsewhere).",
        "",
        f"After the stack's shutdown: {res['after_shutdown']['processes']} processes of either Triton, "
        f"{res['after_shutdown']['shm']} shared-memory regions.",
        "",
    ]
    return "\n".join(lines)


def plot_soak(res: dict, samples: list[tuple[float, float, float]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    t = [s[0] / 60 for s in samples]
    ax1.plot(t, [s[1] for s in samples], label="gateway")
    ax1.set(xlabel="minute", ylabel="RSS (MB)", title="Gateway memory during the soak")
    ax1.set_ylim(bottom=0)
    minutes = res["soak"]["minutes"]
    ax2.plot([m["minute"] for m in minutes], [m["p50_ms"] for m in minutes], "o-", label="p50")
    ax2.plot([m["minute"] for m in minutes], [m["p99_ms"] for m in minutes], "o-", label="p99")
    ax2.set(xlabel="minute", ylabel="latency (ms)", title=f"Latency at {res['soak']['rate']:.1f} req/s")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
