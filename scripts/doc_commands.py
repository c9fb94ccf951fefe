#!/usr/bin/env python3
"""Run the commands of the documents' own fenced blocks, so the docs cannot rot.

    python3 scripts/doc_commands.py docs/RUNBOOK.md            # one document
    python3 scripts/doc_commands.py                            # README.md and docs/*.md
    python3 scripts/doc_commands.py --check-aws-flags docs/RUNBOOK.md

Fenced blocks, by info string:

    ```bash local         run, in document order, each with `bash -euo pipefail`, in the
                          scratch environment below; a non-zero exit is a failure
    ```bash aws           AWS CLI / SAM / signed curl: checked with `bash -n` only
    ```bash not-local REASON...
                          runnable by hand but not here (a build, a package install, another
                          service): checked with `bash -n`, reported with its reason
    ```bash local-server  commands the test must not run itself: the long-running
                          `recs serve` / Prometheus (the runner starts the equivalent) and
                          this runner's own command lines; checked with `bash -n`
    ```bash  (or sh, shell, console, no tag)
                          checked with `bash -n` only, and reported as not run, with a hint
                          of the info string that would let the runner run it
    anything else (json, text, promql, ...) is not a command and is ignored

Blocks in console style (lines starting with "$ ") have their command lines checked
and the output lines ignored.

Convention for local blocks: they talk to `recs serve` at localhost:8080 and to
Prometheus at localhost:9090, exactly as an operator's shell at the repository root
would (cwd has model_registry/ and infra/, `recs` is on PATH). The scratch
environment provides exactly that:

  * a temporary directory (the blocks' cwd and TMPDIR) holding copies of
    model_registry/, infra/ and events/, so nothing in the repository is touched;
  * `recs` on PATH: --recs PATH, else target/release/recs, else target/debug/recs
    (the runner never builds);
  * MODEL_REGISTRY=<scratch>/model_registry and PORT exported, and `recs serve` started
    on 127.0.0.1:8080 with them (ACTIVE_POLL_SECONDS=1 so that changes made with the CLI
    reach it within a second; the default is 10);
  * Prometheus (Debian's `prometheus`) on 127.0.0.1:9090, started only if a local block
    mentions localhost:9090, from infra/prometheus/prometheus.yml with the rule file path
    made absolute, the scrape target set to the server's port and the scrape and
    evaluation intervals shortened to 1s; the runner waits for the first successful
    scrape of job movie-recs before running the block.

A port that is already taken is an error with the reason; --port / --prom-port move
the servers and rewrite localhost:8080 / localhost:9090 in the blocks accordingly.
Each block runs in its own process group; whatever it leaves running is stopped when
it ends. For a file named RUNBOOK.md the runner also checks that every runbook anchor
used by infra/slo.yaml, infra/template.yaml and infra/prometheus/alert_rules.yml is a
heading of the document (GitHub anchors); for every file, that its own #links resolve.

Every failure is reported with file, line and output; the exit status is 1 if any
block, syntax check or anchor check failed. Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
RUN_TAG, AWS_TAG, SERVER_TAG, NOT_LOCAL_TAG = "local", "aws", "local-server", "not-local"
DEFAULT_PORT, DEFAULT_PROM_PORT = 8080, 9090
COPIED_DIRS = ("model_registry", "infra", "events")


# ----------------------------------------------------------------------------- blocks
@dataclass
class Block:
    path: Path          # the document
    line: int           # 1-based line of the first content line
    lang: str
    tags: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"{display(self.path)}:{self.line}"

    @property
    def kind(self) -> str:
        if self.lang not in SHELL_LANGS:
            return "ignored"
        if RUN_TAG in self.tags:
            return "run"
        if AWS_TAG in self.tags:
            return "aws"
        if SERVER_TAG in self.tags:
            return "server"
        if NOT_LOCAL_TAG in self.tags:
            return "not-local"
        return "plain"


def display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


def extract_blocks(path: Path) -> tuple[list[Block], list[str]]:
    """Fenced code blocks of a Markdown file (CommonMark fences), and its lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            c = re.match(r"^ {0,3}(`{3,}|~{3,})\s*$", lines[j])
            if c and c.group(1)[0] == fence[0] and len(c.group(1)) >= len(fence):
                break
            body.append(re.sub(r"^ {0,%d}" % indent, "", lines[j]) if indent else lines[j])
            j += 1
        words = info.split()
        lang = words[0].lower() if words else ""
        blocks.append(Block(path, i + 2, lang, [w.lower() for w in words[1:]], "\n".join(body) + "\n"))
        i = j + 1
    return blocks, lines


def console_commands(text: str) -> tuple[str, list[int]] | None:
    """For a console transcript ("$ cmd" lines then output): the commands, and for each
    of their lines the line index in the block. None when it is not a transcript."""
    lines = text.splitlines()
    if not any(l.startswith("$ ") for l in lines):
        return None
    out, index, cont = [], [], False
    for n, l in enumerate(lines):
        if l.startswith("$ ") or cont:
            out.append(l[2:] if l.startswith("$ ") and not cont else l)
            index.append(n)
            cont = l.rstrip().endswith("\\")
    return "\n".join(out) + "\n", index


# ----------------------------------------------------------------------------- results
@dataclass
class Result:
    where: str
    kind: str                 # run | syntax | anchor | aws-flags
    ok: bool
    summary: str = ""
    output: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, r: Result, verbose: bool = False) -> None:
        self.results.append(r)
        status = "ok  " if r.ok else "FAIL"
        secs = f" ({r.seconds:.1f}s)" if r.kind == "run" else ""
        print(f"{status} {r.kind:<9} {r.where}{secs}{': ' + r.summary if r.summary else ''}", flush=True)
        if r.output and (not r.ok or verbose):
            print(indent(r.output, limit=None if verbose else 80), flush=True)


def indent(text: str, limit: int | None = 80) -> str:
    lines = text.rstrip("\n").splitlines()
    if limit is not None and len(lines) > limit:
        lines = [f"... ({len(lines) - limit} earlier lines cut)"] + lines[-limit:]
    return "\n".join("    | " + l for l in lines)


# ----------------------------------------------------------------------------- syntax
def bash_syntax(block: Block) -> Result:
    text, index = block.text, None
    if block.lang == "console" or console_commands(block.text):
        cc = console_commands(block.text)
        if cc:
            text, index = cc
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(text)
        name = f.name
    try:
        p = subprocess.run(["bash", "-n", name], capture_output=True, text=True)
    finally:
        os.unlink(name)
    if p.returncode == 0:
        return Result(block.where, "syntax", True, "bash -n" + (" (console commands)" if index else ""))

    def relocate(m: re.Match) -> str:
        n = int(m.group(1)) - 1
        n = index[n] if index and n < len(index) else n
        return f"{display(block.path)}:{block.line + n}"

    msg = re.sub(re.escape(name) + r": line (\d+)", relocate, p.stderr)
    return Result(block.where, "syntax", False, "bash -n found a syntax error", msg)


def plain_hint(block: Block) -> str:
    """What a plain shell block would need to be run by the runner."""
    t = block.text
    if console_commands(t):
        return "a transcript with output ($ lines): commands syntax-checked only"
    if re.search(r"(^|[\s;|(])(aws|sam)\s", t) or "--aws-sigv4" in t:
        return "AWS commands: tag it ```bash aws"
    needs = [w for w in ("cargo", "make", "pip", "docker", "moto", "boto3")
             if re.search(r"(?<![\w./-])" + w + r"(?![\w-])", t)]
    needs += ["../shared"] if "../shared" in t else []
    if needs:
        return f"needs {', '.join(needs)} (a build, an install or another service): cannot run in the test, stays syntax-checked"
    if re.search(r"\[--?[a-z]|\bLOC\b|\bFILE\b|<[A-Za-z_]+>|\bvX\.Y\b", t):
        return "has placeholders ([--opt], LOC, FILE, <x>): make the commands concrete, then tag it ```bash local"
    if re.search(r"^\s*(make run|recs serve|prometheus\s)", t, re.M) or re.search(r"&\s*(#.*)?$", t, re.M):
        return "starts a long-running server: tag it ```bash local-server"
    if re.search(r"\b(recs|curl)\b", t):
        return "looks runnable against recs serve on localhost:8080: tag it ```bash local to have it run"
    return "not run: tag it ```bash local to have it run, or ```bash aws"


# ----------------------------------------------------------------------------- anchors
def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"<[^>]+>", "", heading)                       # inline HTML
    h = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", h)           # links -> their text
    h = h.replace("`", "").strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors_of(lines: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = None
    for l in lines:
        m = FENCE.match(l)
        if m:
            if in_fence is None:
                in_fence = m.group(2)[0]
            elif m.group(2)[0] == in_fence and not m.group(3).strip():
                in_fence = None
            continue
        if in_fence:
            continue
        h = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", l)
        if not h:
            continue
        s = slug(h.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    for m in re.finditer(r'<a\s+(?:name|id)="([^"]+)"', "\n".join(lines)):
        out.add(m.group(1))
    return out


def runbook_links() -> list[tuple[str, str]]:
    """(where, anchor) of every link into the runbook from the alert definitions."""
    links: list[tuple[str, str]] = []
    slo = ROOT / "infra" / "slo.yaml"
    if slo.exists():
        for n, l in enumerate(slo.read_text().splitlines(), 1):
            m = re.match(r"^\s+runbook:\s*([A-Za-z0-9_-]+)\s*(#.*)?$", l)
            if m:
                links.append((f"infra/slo.yaml:{n}", m.group(1)))
    for rel, pat in (("infra/template.yaml", r"RunbookBaseUrl\}#([A-Za-z0-9_-]+)"),
                     ("infra/prometheus/alert_rules.yml", r"RUNBOOK\.md#([A-Za-z0-9_-]+)")):
        f = ROOT / rel
        if f.exists():
            for n, l in enumerate(f.read_text().splitlines(), 1):
                for m in re.finditer(pat, l):
                    links.append((f"{rel}:{n}", m.group(1)))
    return links


def check_anchors(path: Path, lines: list[str], report: Report, verbose: bool) -> None:
    anchors = anchors_of(lines)
    bad = []
    text = "\n".join(lines)
    for m in re.finditer(r"\]\(#([^)\s]+)\)", text):
        if m.group(1) not in anchors:
            bad.append(f"{display(path)}:{text.count(chr(10), 0, m.start()) + 1}: link to #{m.group(1)}")
    if path.name == "RUNBOOK.md":
        links = runbook_links()
        for where, a in links:
            if a not in anchors:
                bad.append(f"{where}: runbook anchor #{a}")
        used = sorted({a for _, a in links})
        report.notes.append(f"{display(path)}: alert runbook anchors, all headings: {', '.join(used)}"
                            if not bad else f"{display(path)}: alert runbook anchors checked: {', '.join(used)}")
    report.add(Result(display(path), "anchor", not bad,
                      "every #link resolves" if not bad else f"{len(bad)} link(s) to a missing heading",
                      "\n".join(bad)), verbose)


# ----------------------------------------------------------------------------- aws flags
AWS_STOP = {";", "|", "||", "&&", "&", "(", ")", "\n"}


def aws_invocations(text: str) -> list[tuple[int, list[str], list[str]]]:
    """(line index, [service, operation...], --flags) of every `aws` command in a script."""
    found = []
    logical, start, buf = [], 0, ""
    for n, l in enumerate(text.splitlines()):
        if not buf:
            start = n
        if l.rstrip().endswith("\\"):
            buf += l.rstrip()[:-1] + " "
            continue
        logical.append((start, buf + l))
        buf = ""
    if buf:
        logical.append((start, buf))

    def scan(n: int, s: str) -> None:
        for inner in re.findall(r"\$\(([^()]*(?:\([^()]*\)[^()]*)*)\)", s):
            scan(n, inner)
        try:
            lex = shlex.shlex(s, posix=True, punctuation_chars=";|&()")
            lex.whitespace_split = True
            lex.commenters = "#"
            toks = list(lex)
        except ValueError:
            return
        i = 0
        while i < len(toks):
            if toks[i] == "aws" and (i == 0 or toks[i - 1] in AWS_STOP or toks[i - 1] in ("$", "command")):
                j = i + 1
                while j < len(toks) and toks[j].startswith("--"):      # global options first
                    j += 2 if j + 1 < len(toks) and not toks[j + 1].startswith("-") else 1
                words = []
                while j < len(toks) and len(words) < 3 and re.fullmatch(r"[a-z0-9-]+", toks[j]) \
                        and not toks[j].startswith("-"):
                    words.append(toks[j])
                    j += 1
                    if len(words) == 2 and words[1] != "wait":
                        break
                flags = []
                while j < len(toks) and toks[j] not in AWS_STOP:
                    if toks[j].startswith("--"):
                        flags.append(toks[j].split("=", 1)[0])
                    j += 1
                if len(words) >= 2:
                    found.append((n, words, flags))
                i = j
            else:
                i += 1

    for n, s in logical:
        scan(n, s)
    unique = []
    for f in found:            # a $(...) outside quotes is seen twice
        if f not in unique:
            unique.append(f)
    return unique


def aws_known_flags(cmd: tuple[str, ...]) -> set[str] | None:
    env = dict(os.environ, AWS_PAGER="", PAGER="cat", MANPAGER="cat")
    try:
        p = subprocess.run(["aws", *cmd, "help"], capture_output=True, text=True, env=env,
                           timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    text = re.sub(r".\x08", "", p.stdout)
    return set(re.findall(r"--[a-z0-9][a-z0-9-]*", text))


def check_aws_flags(blocks: list[Block], report: Report, verbose: bool) -> None:
    if not shutil.which("aws"):
        report.notes.append("--check-aws-flags: no aws CLI on PATH, skipped")
        return
    version = subprocess.run(["aws", "--version"], capture_output=True, text=True).stdout.strip() or \
        subprocess.run(["aws", "--version"], capture_output=True, text=True).stderr.strip()
    uses = [(b, n, tuple(w), f) for b in blocks if b.kind in ("aws", "plain")
            for n, w, f in aws_invocations(b.text)]
    cmds = sorted({u[2] for u in uses})
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        known = dict(zip(cmds, ex.map(aws_known_flags, cmds)))
    skipped = sorted(" ".join(c) for c, k in known.items() if k is None)
    for b in blocks:
        bad, checked = [], 0
        for blk, n, cmd, flags in uses:
            if blk is not b or known.get(cmd) is None:
                continue
            checked += 1
            unknown = [f for f in flags if f not in known[cmd]]
            if unknown:
                bad.append(f"{display(b.path)}:{b.line + n}: aws {' '.join(cmd)}: unknown {', '.join(unknown)}")
        if checked:
            report.add(Result(b.where, "aws-flags", not bad, f"{checked} aws command(s) against `aws ... help`",
                              "\n".join(bad)), verbose)
    if skipped:
        report.notes.append(f"--check-aws-flags: not known to this CLI ({version}), not checked: "
                            + "; ".join(skipped))


# ----------------------------------------------------------------------------- environment
def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a process this runner started in its own session, with its process group."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(5)


class Env:
    """The scratch environment the local blocks run in."""

    def __init__(self, recs: Path, port: int, prom_port: int, keep: bool):
        self.recs, self.port, self.prom_port, self.keep = recs, port, prom_port, keep
        self.dir = Path(tempfile.mkdtemp(prefix="doc-commands-"))
        self.server: subprocess.Popen | None = None
        self.prom: subprocess.Popen | None = None
        self.prom_error: str | None = None
        for d in COPIED_DIRS:
            if (ROOT / d).is_dir():
                shutil.copytree(ROOT / d, self.dir / d, symlinks=True)
        (self.dir / "bin").mkdir()
        (self.dir / "bin" / "recs").symlink_to(recs)
        (self.dir / "tmp").mkdir()
        (self.dir / "blocks").mkdir()
        self.env = dict(os.environ)
        for k in ("MODEL_REGISTRY", "MODEL_VERSION", "EVENTS", "DRIFT_EVENTS_URI", "RECS_ADMIN_TOKEN",
                  "AWS_ENDPOINT_URL", "HOST"):
            self.env.pop(k, None)
        self.env.update({
            "PATH": f"{self.dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "MODEL_REGISTRY": str(self.dir / "model_registry"),
            "PORT": str(port),
            "ACTIVE_POLL_SECONDS": "1",
            "TMPDIR": str(self.dir / "tmp"),
            "NO_COLOR": "1",
        })

    def start_server(self) -> None:
        log = open(self.dir / "recs-serve.log", "wb")
        self.server = subprocess.Popen([str(self.recs), "serve"], cwd=self.dir, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"doc_commands: recs serve exited with {self.server.returncode}:\n"
                                 + indent((self.dir / "recs-serve.log").read_text(errors="replace")))
            if http_get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200:
                return
            time.sleep(0.2)
        raise SystemExit("doc_commands: recs serve did not answer /healthz with 200 in 60 s:\n"
                         + indent((self.dir / "recs-serve.log").read_text(errors="replace")))

    def server_alive(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def prometheus_config(self) -> Path:
        src = self.dir / "infra" / "prometheus" / "prometheus.yml"
        text = src.read_text()
        rules = self.dir / "infra" / "prometheus" / "alert_rules.yml"
        subs = [
            (r"(?m)^(\s*-\s*)alert_rules\.yml\s*$", rf"\g<1>'{rules}'"),
            (r"127\.0\.0\.1:8080|localhost:8080", f"127.0.0.1:{self.port}"),
            (r"(?m)^(\s*scrape_interval:\s*)\S+", r"\g<1>1s"),
            (r"(?m)^(\s*scrape_timeout:\s*)\S+", r"\g<1>1s"),
            (r"(?m)^(\s*evaluation_interval:\s*)\S+", r"\g<1>1s"),
        ]
        for pat, rep in subs:
            text, n = re.subn(pat, rep, text)
            if n == 0:
                raise RuntimeError(f"infra/prometheus/prometheus.yml changed shape: no match for {pat!r}; "
                                   "update Env.prometheus_config in scripts/doc_commands.py")
        out = self.dir / "prometheus" / "prometheus.yml"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        return out

    def start_prometheus(self) -> str | None:
        """Start Prometheus once; None when it runs, else why not."""
        if self.prom is not None or self.prom_error:
            return self.prom_error
        try:
            if not shutil.which("prometheus"):
                raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus)")
            if not port_free(self.prom_port):
                raise RuntimeError(f"port {self.prom_port} is in use (another Prometheus?): stop it or pass "
                                   f"--prom-port N (localhost:{DEFAULT_PROM_PORT} in the blocks is then rewritten)")
            cfg = self.prometheus_config()
            if shutil.which("promtool"):
                p = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
                if p.returncode:
                    raise RuntimeError("promtool check config failed:\n" + p.stdout + p.stderr)
            log = open(self.dir / "prometheus" / "prometheus.log", "wb")
            self.prom = subprocess.Popen(
                ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'prometheus' / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.prom_port}"],
                cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            base = f"http://127.0.0.1:{self.prom_port}"
            q = base + "/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="movie-recs"} == 1'})
            deadline = time.time() + 60
            while time.time() < deadline:
                if self.prom.poll() is not None:
                    raise RuntimeError("prometheus exited:\n" + (self.dir / "prometheus" / "prometheus.log")
                                       .read_text(errors="replace")[-3000:])
                status, body = http_get(q)
                if status == 200 and json.loads(body)["data"]["result"]:
                    time.sleep(2)      # a few samples, so that rate() has two
                    return None
                time.sleep(0.3)
            raise RuntimeError("Prometheus did not scrape job movie-recs successfully within 60 s")
        except (RuntimeError, OSError) as e:
            self.prom_error = str(e)
            return self.prom_error

    def run(self, block: Block, n: int, text: str, timeout: float) -> Result:
        script = self.dir / "blocks" / f"{n:03d}.sh"
        script.write_text(text)
        log_path = self.dir / "blocks" / f"{n:03d}.log"
        t0 = time.time()
        # Output goes to a file, not a pipe: a server the block starts in the background
        # must not keep the runner waiting for end-of-file.
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(["bash", "-euo", "pipefail", str(script)], cwd=self.dir, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                code, note = proc.wait(timeout), ""
            except subprocess.TimeoutExpired:
                stop(proc)
                code, note = -1, f"timed out after {timeout:.0f}s"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)      # whatever the block left running
                except (ProcessLookupError, PermissionError):
                    pass
        output = log_path.read_text(errors="replace")
        ok = code == 0
        summary = note or ("" if ok else f"exit {code}")
        if not self.server_alive():
            ok, summary = False, (summary + "; " if summary else "") + "recs serve exited during this block"
            output += "\n--- recs serve log ---\n" + (self.dir / "recs-serve.log").read_text(errors="replace")[-3000:]
        return Result(block.where, "run", ok, summary, output, time.time() - t0)

    def close(self) -> None:
        stop(self.prom)
        stop(self.server)
        if self.keep:
            print(f"doc_commands: scratch environment kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def find_recs(arg: str | None) -> Path:
    cands = [Path(arg)] if arg else [ROOT / "target" / "release" / "recs", ROOT / "target" / "debug" / "recs"]
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return c.resolve()
    raise SystemExit("doc_commands: no recs binary at " + " or ".join(map(str, cands))
                     + " (this runner never builds; build it with `cargo build -p recs`, or pass --recs PATH)")


def rewrite_ports(text: str, port: int, prom_port: int) -> str:
    if port != DEFAULT_PORT:
        text = re.sub(rf"\b(localhost|127\.0\.0\.1):{DEFAULT_PORT}\b", rf"\g<1>:{port}", text)
    if prom_port != DEFAULT_PROM_PORT:
        text = re.sub(rf"\b(localhost|127\.0\.0\.1):{DEFAULT_PROM_PORT}\b", rf"\g<1>:{prom_port}", text)
    return text


def needs_prometheus(text: str, prom_port: int) -> bool:
    return re.search(rf"\b(localhost|127\.0\.0\.1):{prom_port}\b", text) is not None


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README.md and docs/*.md)")
    ap.add_argument("--recs", help="recs binary (default: target/release/recs, else target/debug/recs)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of recs serve (default 8080; 0: a free one)")
    ap.add_argument("--prom-port", type=int, default=DEFAULT_PROM_PORT,
                    help="port of Prometheus (default 9090; 0: a free one)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per local block (default 180)")
    ap.add_argument("--check-aws-flags", action="store_true",
                    help="also check the --flags of every aws command against `aws <service> <op> help`")
    ap.add_argument("--list", action="store_true", help="list the blocks and what would be done, run nothing")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the output of every block")
    args = ap.parse_args(argv)
    # 0: a port nobody uses now (CI, or beside a running `make run` / `make observe`)
    for attr in ("port", "prom_port"):
        if getattr(args, attr) == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                setattr(args, attr, s.getsockname()[1])

    files = args.files or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    t_start = time.time()
    report = Report()
    all_blocks: list[Block] = []
    docs: list[tuple[Path, list[Block], list[str]]] = []
    for f in files:
        if not f.is_file():
            print(f"doc_commands: no such file: {f}", file=sys.stderr)
            return 2
        blocks, lines = extract_blocks(f)
        docs.append((f, blocks, lines))
        all_blocks += blocks

    if args.list:
        for b in all_blocks:
            extra = f"  <- {plain_hint(b)}" if b.kind == "plain" else ""
            print(f"{b.kind:<8} {b.where}  {b.lang} {' '.join(b.tags)}".rstrip() + extra)
        return 0

    # 1. syntax of every shell block, anchors of every document
    for f, blocks, lines in docs:
        check_anchors(f, lines, report, args.verbose)
        for b in blocks:
            if b.kind == "ignored":
                continue
            report.add(bash_syntax(b), args.verbose)
            if b.kind == "plain":
                report.notes.append(f"{b.where}: plain ```{b.lang} block, not run: {plain_hint(b)}")
            elif b.kind == "not-local":
                why = " ".join(t for t in b.tags if t != NOT_LOCAL_TAG) or "no reason given"
                report.notes.append(f"{b.where}: ```bash not-local block, syntax-checked, not run: {why}")
            elif b.kind == "server":
                report.notes.append(f"{b.where}: ```bash local-server block: syntax-checked; the runner starts "
                                    "the equivalent (recs serve, Prometheus) itself")
    if args.check_aws_flags:
        check_aws_flags(all_blocks, report, args.verbose)

    # 2. the local blocks, in order, in one scratch environment
    runnable = [b for b in all_blocks if b.kind == "run"]
    ran = 0
    if runnable:
        syntax_bad = {r.where for r in report.results if r.kind == "syntax" and not r.ok}
        recs = find_recs(args.recs)
        if not port_free(args.port):
            print(f"doc_commands: port {args.port} is in use (another recs serve, e.g. `make run`?): stop it or "
                  f"pass --port N (localhost:{DEFAULT_PORT} in the blocks is then rewritten to localhost:N)",
                  file=sys.stderr)
            return 1
        env = Env(recs, args.port, args.prom_port, args.keep)
        print(f"doc_commands: recs = {recs}; scratch = {env.dir}; recs serve on 127.0.0.1:{args.port}", flush=True)
        try:
            env.start_server()
            for n, b in enumerate(runnable, 1):
                if b.where in syntax_bad:
                    report.add(Result(b.where, "run", False, "not run: syntax error (above)"), args.verbose)
                    continue
                text = rewrite_ports(b.text, args.port, args.prom_port)
                if needs_prometheus(text, args.prom_port):
                    why = env.start_prometheus()
                    if why:
                        report.add(Result(b.where, "run", False, "needs Prometheus, which could not start", why),
                                   args.verbose)
                        continue
                r = env.run(b, n, text, args.timeout)
                ran += 1
                report.add(r, args.verbose)
                if not env.server_alive():
                    print("doc_commands: recs serve is gone; the remaining blocks are not run", file=sys.stderr)
                    for rest in runnable[n:]:
                        report.add(Result(rest.where, "run", False, "not run: recs serve exited"), args.verbose)
                    break
        finally:
            env.close()

    # 3. summary
    failed = [r for r in report.results if not r.ok]
    if report.notes:
        print("\nnotes:")
        for note in report.notes:
            print(f"  {note}")
    kinds: dict[str, list[int]] = {}
    for r in report.results:
        kinds.setdefault(r.kind, [0, 0])[0 if r.ok else 1] += 1
    counts = ", ".join(f"{k}: {v[0]} ok" + (f", {v[1]} FAILED" if v[1] else "") for k, v in kinds.items())
    print(f"\ndoc_commands: {len(files)} file(s), {len(all_blocks)} fenced block(s); {counts}; "
          f"{ran} local block(s) run; {time.time() - t_start:.1f}s")
    if failed:
        print("FAILED:")
        for r in failed:
            print(f"  {r.kind} {r.where}: {r.summary}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
