#!/usr/bin/env python3
"""Alert drills on the local build: `recs serve` scraped by a real Prometheus that runs
the generated rules with short windows (`infra/gen_alerts.py --scale`).

    python3 infra/tests/drill_prometheus.py --recs target/debug/recs HighErrorRate
    python3 infra/tests/drill_prometheus.py --recs target/debug/recs all --json out.json

`recs drill` and `make drill ALERT=...` run this. For each alert, three phases, each on a
fresh Prometheus (an empty TSDB, so one phase's samples never leak into the next) over
the same `recs serve` (started with RECS_FAULT_INJECTION=1 and a fault file), under
steady GET /recommend traffic from a few threads:

  below    the fault just on the quiet side of the threshold (after the alert's longest
           window filled): must stay inactive;
  above    the fault just past the threshold: must fire;
  drill    first no fault (the "healthy" result: the alert must stay inactive), then the
           alert's cause as the runbook describes it (a bad version switched in, the
           server stopped, the active version corrupted, shifted events): the alert must
           go pending, then firing (burn-rate alerts have `for: 0s`: no pending state in
           Prometheus), then resolve after the runbook's action (a rollback, a restart,
           `recs switch` back, the drift job over recovered events).

Limits: the windows are scaled (the alert's shortest becomes 5 s, ModelLoadFailure's
15 s) and scraped every 0.5 s, so "just below / above" are wider than exact: histogram
buckets for latency, and rate() over ~100 requests for ratios (see each plan's values).
The state comes from Prometheus' own /api/v1/alerts. Phases an alert cannot have locally
are reported as "n/a" with the reason (a binary signal has no "just below").
Needs: prometheus (Debian package; apt-get install when root), promtool, PyYAML.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
EVAL = 0.5          # scrape and rule evaluation interval of the drill Prometheus (s)


def log(msg: str):
    print(f"drill: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def ensure_prometheus():
    if shutil.which("prometheus"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("prometheus missing: apt-get install -y prometheus")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                       check=False, stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not shutil.which("prometheus"):
        sys.exit("drill: prometheus is not installed and could not be installed (as root: apt-get install -y prometheus)")


# ------------------------------------------------------------------ recs serve
class Recs:
    """`recs serve` over a scratch copy of the registry, fault injection enabled."""

    def __init__(self, recs: str, work: pathlib.Path, registry_src: pathlib.Path):
        self.recs, self.work = recs, work
        self.registry = work / "registry"
        shutil.copytree(registry_src, self.registry, ignore=shutil.ignore_patterns("active.json", "drift"))
        self.faults = work / "faults.json"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "MODEL_REGISTRY": str(self.registry), "RECS_FAULT_INJECTION": "1",
                    "RECS_FAULT_FILE": str(self.faults), "ACTIVE_POLL_SECONDS": "0",
                    "RUST_LOG": "warn", "PORT": str(self.port)}
        self.env.pop("MODEL_VERSION", None)
        self.cli("switch", "v0.1")          # active.json: v0.1, so a switch records a previous version

    def cli(self, *args: str) -> str:
        r = subprocess.run([self.recs, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"recs {' '.join(args)}: exit {r.returncode}: {r.stderr[-2000:]}")
        return r.stdout

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self):
        self.proc = subprocess.Popen([self.recs, "serve", "--port", str(self.port)], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.work / "recs.log", "ab"))
        for _ in range(600):
            if get(self.url("/healthz"))[0] == 200:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"recs serve exited: {(self.work / 'recs.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("recs serve did not answer /healthz in 60 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def set_faults(self, **faults):
        tmp = self.faults.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        tmp.replace(self.faults)


class Traffic:
    """Steady GET /recommend traffic from a few threads, until stopped."""

    def __init__(self, recs: Recs, threads: int = 4):
        self.recs, self.threads, self.stop_ev = recs, threads, threading.Event()
        self.sent = 0
        self.pool: list[threading.Thread] = []

    def _run(self, k: int):
        uid = 1 + k
        while not self.stop_ev.is_set():
            get(self.recs.url(f"/recommend/{uid}?k=10"), timeout=5)
            self.sent += 1
            uid = uid % 500 + 1
            if self.recs.proc is None:
                time.sleep(0.05)

    def __enter__(self):
        self.pool = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.threads)]
        for t in self.pool:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.pool:
            t.join(10)


# ------------------------------------------------------------------ Prometheus
class Prometheus:
    def __init__(self, work: pathlib.Path, rules: pathlib.Path, target_port: int):
        self.dir = pathlib.Path(tempfile.mkdtemp(dir=work, prefix="prom-"))
        self.port = free_port()
        cfg = {"global": {"scrape_interval": f"{int(EVAL * 1000)}ms", "scrape_timeout": f"{int(EVAL * 900)}ms",
                          "evaluation_interval": f"{int(EVAL * 1000)}ms"},
               "rule_files": [str(rules)],
               "scrape_configs": [{"job_name": "movie-recs", "metrics_path": "/metrics",
                                   "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "prometheus.log", "wb"))
        for _ in range(300):
            if get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"Prometheus did not start: {(self.dir / 'prometheus.log').read_text()[-2000:]}")

    def wait_scraped(self):
        """Until job movie-recs has been scraped and two rule evaluations ran on it (before
        the first scrape, `absent(up)` makes ServiceDown pending: not the drill's doing)."""
        q = urllib.parse.quote('up{job="movie-recs"} == 1')
        for _ in range(600):
            code, body = get(f"http://127.0.0.1:{self.port}/api/v1/query?query={q}")
            if code == 200 and json.loads(body)["data"]["result"]:
                time.sleep(2 * EVAL + 0.2)
                return
            time.sleep(0.1)
        raise RuntimeError(f"Prometheus never scraped recs serve (60 s): {(self.dir / 'prometheus.log').read_text()[-1500:]}")

    def state(self, alert: str) -> str:
        """inactive | pending | firing: the most severe state of the alert's instances."""
        code, body = get(f"http://127.0.0.1:{self.port}/api/v1/alerts")
        if code != 200:
            raise RuntimeError(f"/api/v1/alerts answered {code}")
        states = {a["state"] for a in json.loads(body)["data"]["alerts"] if a["labels"].get("alertname") == alert}
        return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def watch(prom: Prometheus, alert: str, seconds: float, until: str | None = None) -> list[str]:
    """The states seen (in order, deduplicated) for `seconds`, or until `until` is seen."""
    seen: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = prom.state(alert)
        if not seen or seen[-1] != s:
            seen.append(s)
        if s == until:
            break
        time.sleep(0.1)
    return seen


# ------------------------------------------------------------------ the drills
def scale_of(spec: dict) -> float:
    """The scale that makes the alert's shortest window 5 s (10 scrapes)."""
    ws = [a for a in [spec.get("window")] if a] + [w["short"] for w in spec.get("windows") or []]
    shortest = min(seconds(w) for w in ws)
    return shortest / 5


def seconds(d: str) -> float:
    sys.path.insert(0, str(INFRA))
    import gen_alerts  # noqa: E402
    return gen_alerts.seconds(d)


def windows(spec: dict, scale: float) -> list[float]:
    """The alert's measurement windows after scaling (a burn rate's short ones), in s."""
    ws = [spec.get("window")] if spec.get("window") else [w["short"] for w in spec["windows"]]
    return [seconds(w) / scale for w in ws]


def phase_time(spec: dict, scale: float) -> float:
    """How long a quiet phase is watched: the shortest window filled (with steady traffic
    every window sees the same ratio), plus `for`, plus 3 evaluations."""
    return min(windows(spec, scale)) + seconds(spec.get("for", "0s")) / scale + 3 * EVAL + 1


def resolve_time(spec: dict, scale: float) -> float:
    """How long the alert may take to clear: its longest (short) window emptied, plus margin."""
    return max(windows(spec, scale)) + seconds(spec.get("for", "0s")) / scale + 15


def corrupt_and_activate(recs: Recs, version: str):
    """The active version corrupted: truncate its item factors, then point active.json at
    it (by hand: `recs switch` verifies and would refuse)."""
    f = recs.registry / version / "als" / "item_factors.npy"
    with open(f, "r+b") as fh:
        fh.truncate(max(0, f.stat().st_size - 4))
    active = json.loads((recs.registry / "active.json").read_text())
    active["previous_version"], active["active_version"] = active["active_version"], version
    (recs.registry / "active.json").write_text(json.dumps(active))


# Each alert: the fault on each side of its threshold (a string: n/a, and why), the cause
# and the runbook's action. Ratios are of GET /recommend; delays in ms. `below` is always
# the quiet side and `above` the firing side: for an alert with op '<' (LowAvailability:
# availability < 99.9%) they are mirrored (mirrored=True), `below` being an error ratio
# under the budget.
def plans(slo: dict) -> dict:
    a = slo["alerts"]
    budget = 1 - slo["slo"]["availability"]
    burn_min = lambda n: min(w["factor"] for w in a[n]["windows"]) * budget  # noqa: E731

    def switch_bad(**faults):
        def cause(recs: Recs):
            recs.set_faults(version="v0.2", **faults)
            code, _ = get(recs.url("/switch?model=v0.2"))
            assert code == 200, f"/switch?model=v0.2 answered {code}"
        return cause

    def rollback(recs: Recs):
        # the runbook's local rollback: previous_version from /rollout/status, then /switch
        _, body = get(recs.url("/rollout/status"))
        prev = json.loads(body)["previous_version"]
        code, _ = get(recs.url(f"/switch?model={prev}"))
        assert code == 200, f"rollback to {prev} answered {code}"

    def stopped(recs: Recs):
        recs.stop()

    def restart(recs: Recs):
        recs.start()

    def corrupt(recs: Recs):
        corrupt_and_activate(recs, "v0.2")

    def switch_back(recs: Recs):
        recs.cli("switch", "v0.1")      # the runbook: roll back from a shell with registry access

    def baseline_then_drift(recs: Recs):
        # v0.1's baseline from generated training ratings (the demo baselines come from
        # `recs gen-data` ratings, whose rating distribution generated events do not follow)
        csv = recs.work / "baseline-ratings.csv"
        recs.cli("drift", "gen-events", "--seed", "11", "--ratings-csv", str(csv))
        recs.cli("drift", "baseline", "--version", "v0.1", "--ratings", str(csv))
        drift(False)(recs)

    def drift(shift: bool):
        def run(recs: Recs):
            events = recs.work / ("events-shifted" if shift else "events")
            shutil.rmtree(events, ignore_errors=True)
            recs.cli("drift", "gen-events", "--out", str(events), *(["--shift"] if shift else []))
            recs.cli("drift", "--events", str(events))
        return run

    def psi(value):
        # The drift job's result with its largest feature set to `value` (the rest as the
        # last real run computed them): the gauge recs serve exports at its next poll.
        def run(recs: Recs):
            latest = recs.registry / "drift" / "latest.json"
            summary = json.loads(latest.read_text())
            top = max(summary["features"], key=summary["features"].get)
            summary["features"] = {f: min(v, value) for f, v in summary["features"].items()}
            summary["features"][top] = value
            summary["max_psi"] = value
            latest.write_text(json.dumps(summary))
        return run

    def ratio(r):
        return {"error_ratio": r}

    thr = {n: x.get("threshold") for n, x in a.items()}
    return {
        "HighLatencyP95": dict(below={"delay_ms": 60}, above={"delay_ms": 130},
                               cause=switch_bad(delay_ms=200), action=rollback,
                               what="v0.2 switched in answers 200 ms late; rollback"),
        "HighLatencyP99": dict(below={"delay_ms": 400}, above={"delay_ms": 600},
                               cause=switch_bad(delay_ms=800), action=rollback,
                               what="v0.2 switched in answers 800 ms late; rollback"),
        "HighErrorRate": dict(below=ratio(thr["HighErrorRate"] * 0.6), above=ratio(thr["HighErrorRate"] * 1.6),
                              cause=switch_bad(error_ratio=0.03), action=rollback,
                              what="v0.2 switched in answers 3% 5xx; rollback"),
        "CriticalErrorRate": dict(below=ratio(thr["CriticalErrorRate"] * 0.7), above=ratio(thr["CriticalErrorRate"] * 1.4),
                                  cause=switch_bad(error_ratio=0.2), action=rollback,
                                  what="v0.2 switched in answers 20% 5xx; rollback"),
        "LowAvailability": dict(below=ratio((1 - thr["LowAvailability"]) * 0.4), above=ratio((1 - thr["LowAvailability"]) * 2.5),
                                cause=switch_bad(error_ratio=0.01), action=rollback, mirrored=True,
                                what="v0.2 switched in answers 1% 5xx; rollback"),
        "AvailabilityBurnRatePage": dict(below=ratio(burn_min("AvailabilityBurnRatePage") * 0.6),
                                         above=ratio(burn_min("AvailabilityBurnRatePage") * 1.6),
                                         cause=switch_bad(error_ratio=0.05), action=rollback,
                                         what="v0.2 switched in answers 5% 5xx; rollback"),
        "AvailabilityBurnRateTicket": dict(below=ratio(burn_min("AvailabilityBurnRateTicket") * 0.5),
                                           above=ratio(burn_min("AvailabilityBurnRateTicket") * 2),
                                           cause=switch_bad(error_ratio=0.01), action=rollback,
                                           what="v0.2 switched in answers 1% 5xx; rollback"),
        "ServiceDown": dict(below="n/a: up and health are 0 or 1, nothing lies between",
                            above="n/a: see the drill (up == 0)",
                            cause=stopped, action=restart, what="recs serve stopped; restarted"),
        "ModelLoadFailure": dict(below="n/a: the failure count is set by the poll rate; promtool tests cover 10 vs 11",
                                 above="n/a: see below",
                                 cause=corrupt, action=switch_back,
                                 # 10 failures in 15 s, not 5 s: each failed load reads and
                                 # hashes the version (slower under load), polls every 200 ms
                                 scale=20,
                                 what="active.json -> v0.2 with truncated item factors; `recs switch v0.1`"),
        "HighDataDrift": dict(below=psi(thr["HighDataDrift"] * 0.95), above=psi(thr["HighDataDrift"] * 1.05),
                              setup=baseline_then_drift, reset=drift(False),
                              cause=drift(True), action=drift(False),
                              what="`recs drift` over shifted events; then over recovered events"),
    }


def run_alert(name: str, slo: dict, recs_bin: str, registry: pathlib.Path, work: pathlib.Path) -> dict:
    spec = slo["alerts"][name]
    plan = plans(slo)[name]
    scale = plan.get("scale") or scale_of(spec)
    rules = work / f"rules-{name}.yml"
    subprocess.run([sys.executable, str(INFRA / "gen_alerts.py"), "--scale", repr(scale), "--out", str(rules)],
                   check=True, stdout=subprocess.DEVNULL)
    quiet = phase_time(spec, scale)
    fire_timeout = quiet + 20
    clear_timeout = resolve_time(spec, scale)
    (work / name).mkdir()
    recs = Recs(recs_bin, work / name, registry)
    result = {"alert": name, "scale": scale, "what": plan["what"]}
    t0 = time.monotonic()
    if plan.get("setup"):
        plan["setup"](recs)
    recs.start()
    try:
        with Traffic(recs) as traffic:
            for phase in ("below", "above"):
                faults = plan[phase]
                if isinstance(faults, str):
                    result[phase] = {"ok": None, "note": faults}
                    continue
                if callable(faults):            # a condition, not a fault (a drift result)
                    faults(recs)
                    faults = {"condition": phase}
                else:
                    recs.set_faults(**faults)
                prom = Prometheus(work / name, rules, recs.port)
                try:
                    prom.wait_scraped()
                    if phase == "below":
                        # steady state first: until the longest (short) window holds this
                        # traffic, a fresh TSDB's windows all cover the same few seconds,
                        # where one error among ~100 requests is a ratio far above 0.6x
                        time.sleep(max(windows(spec, scale)))
                    if phase == "above":
                        seen = watch(prom, name, fire_timeout, until="firing")
                        ok = seen[-1] == "firing"
                    else:
                        seen = watch(prom, name, quiet)
                        ok = seen == ["inactive"]
                finally:
                    prom.close()
                result[phase] = {"ok": ok, "faults": faults, "states": seen}
                log(f"{name} {phase:7} {'PASS' if ok else 'FAIL'} {faults} states {seen}")
            recs.set_faults()
            if plan.get("reset"):
                plan["reset"](recs)
            prom = Prometheus(work / name, rules, recs.port)
            try:
                prom.wait_scraped()
                warm = watch(prom, name, quiet)          # healthy first, so the drill starts inactive
                plan["cause"](recs)
                fired = watch(prom, name, fire_timeout, until="firing")
                plan["action"](recs)
                resolved = watch(prom, name, clear_timeout, until="inactive")
            finally:
                prom.close()
            pending_expected = seconds(spec.get("for", "0s")) > 0
            ok = (warm == ["inactive"] and fired[-1] == "firing" and resolved[-1] == "inactive"
                  and (("pending" in fired) or not pending_expected))
            result["healthy"] = {"ok": warm == ["inactive"], "states": warm,
                                 "note": "the drill's first phase: steady traffic, no fault"}
            if not ok:
                log(f"{name}: recs serve log (tail):\n{(work / name / 'recs.log').read_text()[-3000:]}")
            result["drill"] = {"ok": ok, "before": warm, "after_cause": fired, "after_action": resolved,
                               "pending_expected": pending_expected}
            log(f"{name} drill   {'PASS' if ok else 'FAIL'} before {warm} cause {fired} action {resolved}")
            result["requests"] = traffic.sent
    finally:
        recs.stop()
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


RUNBOOK_ALERTS = ["HighLatencyP95", "HighLatencyP99", "HighErrorRate", "CriticalErrorRate", "ServiceDown",
                  "LowAvailability", "ModelLoadFailure", "HighDataDrift", "AvailabilityBurnRatePage",
                  "AvailabilityBurnRateTicket"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("alerts", nargs="+", help=f"alert names or `all` ({', '.join(RUNBOOK_ALERTS)})")
    ap.add_argument("--recs", default=str(REPO / "target" / "debug" / "recs"))
    ap.add_argument("--registry", type=pathlib.Path, default=REPO / "model_registry")
    ap.add_argument("--json", type=pathlib.Path, help="write the results here")
    ap.add_argument("--jobs", type=int, default=2, help="drills run at once (each has its own ports)")
    args = ap.parse_args(argv)
    names = RUNBOOK_ALERTS if args.alerts == ["all"] else args.alerts
    for n in names:
        if n not in RUNBOOK_ALERTS:
            sys.exit(f"drill: no local drill for {n!r} (one of: {', '.join(RUNBOOK_ALERTS)})")
    if not pathlib.Path(args.recs).exists():
        sys.exit(f"drill: {args.recs} not found: cargo build -p recs --bin recs")
    ensure_prometheus()
    slo = yaml.safe_load((INFRA / "slo.yaml").read_text())
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="recs-drill-") as tmp:
        work = pathlib.Path(tmp)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            futs = {n: ex.submit(run_alert, n, slo, args.recs, args.registry, work) for n in names}
            for n, f in futs.items():
                try:
                    results[n] = f.result()
                except Exception as e:  # a drill that cannot run is a failure, reported as such
                    results[n] = {"alert": n, "error": f"{type(e).__name__}: {e}"}
                    log(f"{n}: ERROR {e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    failed = [n for n, r in results.items()
              if "error" in r or any(r.get(p, {}).get("ok") is False for p in ("healthy", "below", "above", "drill"))]
    mark = lambda r, p: {True: "yes", False: "NO", None: "n/a"}[r.get(p, {}).get("ok")]  # noqa: E731
    print(f"{'alert':28} {'drill':6} {'healthy':8} {'below':6} {'above':6} seconds  (Prometheus, windows / scale)")
    for n, r in results.items():
        print(f"{n:28} {mark(r, 'drill'):6} {mark(r, 'healthy'):8} {mark(r, 'below'):6} {mark(r, 'above'):6} "
              f"{r.get('seconds', '-')}")
    if failed:
        print(f"drill: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
