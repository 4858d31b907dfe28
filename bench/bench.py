#!/usr/bin/env python3
"""syncmail benchmark: syncmail against mbsync (isync) and offlineimap3, download only,
from a private Dovecot on 127.0.0.1 over plain IMAP. Run it through bench/run.sh;
bench/README.md says what it measures and why it is built this way.

Python 3 standard library only. Needs root (Dovecot's mail processes run as nobody).
"""

import argparse
import datetime
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
BENCH = ROOT / "bench"
DOVECOT_TEMPLATE = ROOT / "scripts" / "dovecot" / "dovecot.conf.in"
MAKE_CERTS = ROOT / "scripts" / "dovecot" / "make-certs.sh"
CORPUS = Path(os.environ.get("SYNCMAIL_CORPUS_SCRIPT", ROOT.parent / "shared" / "corpus" / "make-corpus.py"))
TIME = "/usr/bin/time"  # GNU time: the shell's `time` keyword cannot report peak RSS

TOOLS = ["syncmail", "mbsync", "offlineimap"]
# Debian packages that provide what the harness runs.
PACKAGES = {"dovecot": "dovecot-imapd", "mbsync": "isync", "offlineimap": "offlineimap3", "time": "time"}

# What each scenario is called in the report.
SCENARIOS = {
    "initial": "Initial sync into an empty store",
    "resync": "Resync, nothing changed",
    "change": "Change sync",
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Runs a command that must succeed (setup steps, not measured)."""
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copytree(src, dst):
    """cp -a: keeps owners (the server's files belong to 65534) and times."""
    run(["cp", "-a", str(src), str(dst)])


def rmtree(path):
    if path.exists():
        run(["rm", "-rf", "--", str(path)])  # a little faster than shutil.rmtree


# Where the stores and server copies of finished runs go instead of being deleted (see
# `discard`); None: delete them at once (--rm-between-runs).
GRAVE = None
_graves = 0


def discard(path):
    """Gets a finished run's directory out of the way without deleting it: a rename into
    GRAVE, emptied only between corpora (`empty_grave`). On ext4 without a journal (this
    machine's disk), deleting many files makes creating files right afterwards slow: for a
    minute or more the inode allocator passes over each recently deleted inode (creating
    10,000 files: 0.3 s on a quiet disk, 2.2-3.4 s after deleting 10,000 others). Deleting
    the last run's 10,000 or 100,000 files just before a timed run would time the file
    system's reaction to the harness, not the tool."""
    global _graves
    if not path.exists():
        return
    if GRAVE is None:
        rmtree(path)
        return
    GRAVE.mkdir(parents=True, exist_ok=True)
    _graves += 1
    path.rename(GRAVE / f"{_graves}-{path.name}")


def empty_grave():
    """Deletes what `discard` kept, then waits out the time in which ext4 avoids reusing
    the freed inodes (60 s for clean inode tables), so that the next timed run does not
    meet it."""
    if GRAVE is not None and GRAVE.exists() and any(GRAVE.iterdir()):
        log("deleting the finished runs' directories, then waiting 70 s for the file system to settle")
        rmtree(GRAVE)
        os.sync()
        time.sleep(70)


# --------------------------------------------------------------------------------------
# Counting what a Maildir tree holds: the check that a tool really synced everything.


def maildir_counts(root):
    """(messages, flagged, bytes) over every cur/ and new/ below root, in any layout (the
    server's Maildir++, syncmail's and mbsync's verbatim, offlineimap's)."""
    messages = flagged = size = 0
    for dirpath, dirnames, _ in os.walk(root):
        name = os.path.basename(dirpath)
        if name in ("cur", "new", "tmp"):
            dirnames[:] = []  # a message directory has no folders inside
        if name not in ("cur", "new"):
            continue
        with os.scandir(dirpath) as it:
            for e in it:
                messages += 1
                size += e.stat(follow_symlinks=False).st_size
                _, sep, info = e.name.partition(":2,")
                flagged += bool(sep) and "F" in info
    return messages, flagged, size


# --------------------------------------------------------------------------------------
# The server: a private Dovecot, as scripts/demo.sh and scripts/dovecot/README.md start it.


class Server:
    """Dovecot under `dir` (live state) with snapshots of mail/index/control/home under
    `snapdir`. Restarted around every restore so that no imap process sees files swapped
    under it."""

    STATE = ["mail", "index", "control", "home"]

    def __init__(self, dir, snapdir, list_index="yes"):
        self.dir = dir
        self.list_index = list_index
        self.snapdir = snapdir
        self.proc = None
        self.port = free_port()
        self.port_tls = free_port()
        self.conf = dir / "dovecot.conf"

    def create(self, corpus_args):
        rmtree(self.dir)
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o755)  # the mail processes run as nobody and must get in
        for d in ("index", "control", "home"):
            (self.dir / d).mkdir()
        run(["bash", str(MAKE_CERTS), str(self.dir / "certs")])
        run([sys.executable, str(CORPUS), str(self.dir / "mail")] + corpus_args, stdout=subprocess.DEVNULL)
        self.chown()
        text = DOVECOT_TEMPLATE.read_text()
        for k, v in {"@DIR@": str(self.dir), "@PORT_PLAIN@": str(self.port), "@PORT_TLS@": str(self.port_tls),
                     "@IMAP_CAPABILITY@": "", "@AUTH_MECHANISMS@": "plain login", "@SEPARATOR@": ".",
                     "@PASSWORD@": "secret", "@OAUTH2_PASSDB@": "", "@MAILBOX_LIST_INDEX@": self.list_index,
                     "@IMAP_PLUGINS@": "", "@MAX_CONNECTIONS@": "100"}.items():
            text = text.replace(k, v)
        self.conf.write_text(text)

    def chown(self):
        run(["chown", "-R", "65534:65534"] + [str(self.dir / d) for d in self.STATE])

    def start(self):
        assert self.proc is None
        # Own session, so that the whole group (master, auth, imap, ...) can be killed at
        # once with os.killpg. Never /usr/bin/kill: procps 4.0.2 mis-parses `kill -9 -PGID`
        # and signals every process.
        self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # The port accepts before auth is up; the greeting comes only once it is.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(4) == b"* OK":
                        break
            except OSError:
                pass
            if self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"Dovecot did not start; see {self.dir / 'dovecot.log'}")
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit(f"Dovecot did not start; see {self.dir / 'dovecot.log'}")
        self.warm_up_login()

    def warm_up_login(self):
        """Logs in and out twice, selecting nothing (no mailbox state changes). Dovecot is
        restarted before every run (its storage is restored), and the first logins after a
        start wait for its auth and login processes to come up: tens of milliseconds that
        a server running all the time does not cost, and that would swamp the resync
        figures. Every tool meets the same warm server."""
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                f = s.makefile("rwb")
                f.readline()
                f.write(b"w1 LOGIN test secret\r\nw2 LOGOUT\r\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line or line.startswith(b"w2 "):
                        break

    def stop(self, graceful=False):
        """graceful: SIGTERM to the master and wait (it lets imap processes finish their
        index writes; used before snapshots). Otherwise SIGKILL to the whole group: the
        live state is thrown away before the next run anyway."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # session leader: its pid is the group id
        if graceful:
            time.sleep(0.2)  # let imap processes of a client that just logged out finish
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def snapshot(self, name):
        self.stop(graceful=True)
        dst = self.snapdir / name
        rmtree(dst)
        dst.mkdir(parents=True)
        for d in self.STATE:
            copytree(self.dir / d, dst / d)

    def restore(self, name):
        """The server's storage exactly as in snapshot `name`, and Dovecot running on it."""
        self.stop()
        for d in self.STATE:
            discard(self.dir / d)
            copytree(self.snapdir / name / d, self.dir / d)
        self.start()

    def doveadm(self, *args, stdin=None):
        return run(["doveadm", "-c", str(self.conf)] + list(args), stdin=stdin, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)

    def counts(self):
        return maildir_counts(self.dir / "mail")

    def cpu(self):
        """CPU seconds (user + sys) of the master's children that have exited and been
        reaped: the imap and imap-login processes of the sessions so far."""
        rest = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(rest[13]) + int(rest[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime

    def settle(self, timeout=5):
        """Waits until the sessions' imap and imap-login processes are gone (a client's
        exit does not wait for the server to finish closing its session)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
                names = []
                for k in kids:
                    try:
                        names.append(Path(f"/proc/{k}/comm").read_text().strip())
                    except OSError:
                        pass
            except OSError:
                return
            if not any(n.startswith("imap") for n in names):
                return
            time.sleep(0.01)


# --------------------------------------------------------------------------------------
# The clients. Each gets its own directory: `live` (what the tool reads and writes: the
# Maildir and, where the tool keeps it apart, its state) and `base` (a synced copy, the
# starting point of resync and change runs). Configurations live outside `live`.


class Tool:
    name = "?"

    def __init__(self, home, server, two_way=False):
        self.home = home
        self.server = server
        self.two_way = two_way
        self.live = home / "live"
        self.base = home / "base"
        self.maildir = self.live / "Mail"
        home.mkdir(parents=True, exist_ok=True)
        self.write_config()

    def write_config(self):
        pass

    def command(self):
        raise NotImplementedError

    def env(self):
        # HOME inside the bench so that no tool reads or writes the user's dotfiles.
        return dict(os.environ, HOME=str(self.home))

    def reset_empty(self):
        discard(self.live)
        self.maildir.mkdir(parents=True)

    def save_base(self):
        rmtree(self.base)
        copytree(self.live, self.base)

    def restore_base(self):
        discard(self.live)
        copytree(self.base, self.live)


class Syncmail(Tool):
    name = "syncmail"

    def __init__(self, home, server, binary, two_way=False):
        self.binary = binary
        super().__init__(home, server, two_way)

    def write_config(self):
        (self.home / "config.toml").write_text(f"""\
[accounts.bench]
maildir = "{self.maildir}"
state-dir = "{self.live / 'state'}"
[accounts.bench.imap]
host = "127.0.0.1"
port = {self.server.port}
tls = "none"
user = "test"
password = "secret"
""")

    def command(self):
        # The flags written out: the default has grown (upload-contents since two-way sync),
        # and the comparison must do the same work as the others.
        flags = "download-hierarchy,download-contents" + (",upload-contents" if self.two_way else "")
        return [str(self.binary), "-c", str(self.home / "config.toml"), "-q", "sync", "--flags", flags]


class Mbsync(Tool):
    name = "mbsync"

    def write_config(self):
        # Sync Pull: download only (or Sync All with --two-way). Pull includes Delete, which
        # only marks a message expunged on the server as deleted (T) here; Expunge Near then
        # removes those files, the same end state as syncmail's (Expunge Both for two-way).
        # FSync yes is the default, written out because it matters for the comparison
        # (syncmail makes its writes durable too).
        # AuthMechs PLAIN: the SASL mechanism syncmail uses too (LOGIN works as well, with
        # a warning about the password sent in the clear).
        (self.home / "mbsyncrc").write_text(f"""\
FSync yes

IMAPAccount bench
Host 127.0.0.1
Port {self.server.port}
User test
Pass secret
SSLType None
AuthMechs PLAIN

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path {self.maildir}/
Inbox {self.maildir}/INBOX
SubFolders Verbatim

Channel bench
Far :bench-far:
Near :bench-near:
Patterns *
Create Near
Sync {"All" if self.two_way else "Pull"}
Expunge {"Both" if self.two_way else "Near"}
SyncState *
""")

    def command(self):
        return ["mbsync", "-c", str(self.home / "mbsyncrc"), "-a", "-q"]


class Offlineimap(Tool):
    name = "offlineimap"

    def write_config(self):
        # readonly on the remote: offlineimap's download-only mode (it never writes to the
        # server; off with --two-way). Everything else is left at offlineimap's defaults:
        # fsync on, one IMAP connection (maxconnections 1), sqlite status, no compression.
        (self.home / "offlineimaprc").write_text(f"""\
[general]
accounts = bench
metadata = {self.live / 'metadata'}

[Account bench]
localrepository = bench-local
remoterepository = bench-remote

[Repository bench-local]
type = Maildir
localfolders = {self.maildir}
sep = /

[Repository bench-remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {self.server.port}
remoteuser = test
remotepass = secret
ssl = no
starttls = no
readonly = {not self.two_way}
createfolders = False
""")

    def command(self):
        return ["offlineimap", "-c", str(self.home / "offlineimaprc"), "-o", "-u", "quiet"]


class CopyLimit(Tool):
    """Not a sync tool: `cp -r` of the server's Maildir tree then `sync`, the most this
    disk can do for the initial case."""
    name = "cp -r + sync"

    def command(self):
        dst = self.maildir / "copy"
        return ["sh", "-c", f"cp -r {shlex.quote(str(self.server.dir / 'mail'))} {shlex.quote(str(dst))} && sync"]


# --------------------------------------------------------------------------------------
# Measuring.


class Result:
    def __init__(self, wall, user, sys_, rss_kb, server_cpu, ok, note):
        self.wall, self.user, self.sys, self.rss_kb = wall, user, sys_, rss_kb
        self.server_cpu, self.ok, self.note = server_cpu, ok, note

    @property
    def cpu(self):
        return self.user + self.sys


def timed(tool, logfile, timeout):
    """One run of the tool under GNU time. Returns (wall, user, sys, peak RSS KiB, exit
    status), or None and why not.

    GNU time (`-f '%e %U %S %M'`) prints seconds with two decimals, too coarse for runs
    that take a few milliseconds (resyncs). So the figures are read here from the same
    source GNU time reads, at full resolution: wall from a monotonic clock around the
    process, user and sys from wait4() on the `time` process (its rusage includes the tool
    it waited for; `time` itself adds about a millisecond). Peak RSS is GNU time's %M.
    GNU time's whole line stays in the run's .time file as a check.
    """
    tfile = logfile.with_suffix(".time")
    cmd = [TIME, "-f", "%e %U %S %M", "-o", str(tfile), "--"] + tool.command()
    done = []
    with open(logfile, "wb") as out:
        t0 = time.perf_counter()
        # Own process group, so that a run that hangs can be killed with all it started.
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=tool.env(),
                             start_new_session=True)

        def reap():
            _, status, ru = os.wait4(p.pid, 0)
            done.append((time.perf_counter() - t0, os.waitstatus_to_exitcode(status), ru))

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        timed_out = True
        try:
            waiter.join(timeout)
            timed_out = not done
        finally:
            if not done:  # timeout, or ^C: leave nothing running
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                waiter.join()
        p.returncode = done[0][1]  # reaped by wait4 above, not by Popen
    if timed_out:
        return None, f"timed out after {timeout} s"
    wall, rc, ru = done[0]
    figures = re.findall(r"^([\d.]+) ([\d.]+) ([\d.]+) (\d+)$", tfile.read_text() if tfile.exists() else "", re.M)
    if not figures:
        return None, "GNU time wrote no figures"
    # Peak RSS from GNU time (%M, the tool's own): wait4's ru_maxrss here would be that of
    # the `time` process, which began as a fork of this Python process.
    rss_kb = int(figures[-1][3])
    # GNU time passes the tool's exit status on (and writes "Command exited with non-zero
    # status N" into its file).
    return (wall, ru.ru_utime, ru.ru_stime, rss_kb, rc), None


def tail(path, n=5):
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(lines[-n:])


# --------------------------------------------------------------------------------------
# The harness.


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.warnings = []
        self.sections = []  # markdown, in order
        self.results = {}  # (corpus, scenario, tool) -> [Result]
        self.corpora = []  # (key, short label) in the order run
        rmtree(self.work / "logs")  # from an earlier run

    def warn(self, msg):
        self.warnings.append(msg)
        log("WARNING: " + msg)

    # ---- one corpus: server, warm-up, the three scenarios

    def corpus(self, key, title, label, corpus_args):
        a = self.args
        self.corpora.append((key, label))
        cdir = self.work / key
        rmtree(cdir)
        server = Server(cdir / "server", cdir / "snapshots", a.list_index)
        self.server = server
        log(f"{title}: writing the corpus")
        server.create(corpus_args)
        server.start()
        msgs, _, size = server.counts()
        folders = sum(1 for _ in server.doveadm("mailbox", "list", "-u", "test").stdout.splitlines())
        log(f"{title}: {msgs} messages, {folders} folders, {size / 1e6:.0f} MB")

        tools = []
        for name in TOOLS:
            if name in a.skip:
                continue
            home = cdir / "tools" / name
            if name == "syncmail":
                tools.append(Syncmail(home, server, a.syncmail_bin, a.two_way))
            elif name == "mbsync":
                tools.append(Mbsync(home, server, a.two_way))
            else:
                tools.append(Offlineimap(home, server, a.two_way))
        copy = CopyLimit(cdir / "tools" / "cp", server)

        # Warm-up: one untimed initial sync per tool. It makes Dovecot build its indexes
        # and caches the fields each client asks for, moves the corpus from new/ to cur/,
        # and fills the page cache, so that no timed run pays for those and all runs see
        # the same server. It also checks each configuration once before timing anything.
        for t in tools:
            log(f"{title}: warm-up {t.name}")
            t.reset_empty()
            os.sync()
            r = self.one_run(t, key, "warmup", 0, server.counts())
            if r is None or not r.ok:
                self.warn(f"{title}: warm-up of {t.name} failed; its figures below are suspect")
        # Settle: Dovecot's indexes brought up to date, as on a server that has run a while.
        # The warm-ups leave each folder's cached STATUS figures in the list index outdated
        # (their SELECTs and FETCHes wrote to the folders' own indexes) and the directories'
        # mtimes within Dovecot's "changed too recently to trust" window, so the first look at
        # a folder after them opens it and reads its whole uidlist, or even lists cur/ again.
        # A background engine's resync is a poll of a server it polled before, which finds
        # the folders settled; one `doveadm mailbox status` on every folder, 2 s after the last
        # write, gives every tool that server. A tool that SELECTs every folder (mbsync,
        # offlineimap) pays the same either way; one that asks STATUS (syncmail) would
        # otherwise pay for the warm-ups' writes.
        time.sleep(2)
        server.doveadm("mailbox", "status", "-u", "test", "messages uidnext uidvalidity highestmodseq", "*")
        server.snapshot("pristine")
        expected = server.counts()

        runs = {t.name: (a.offlineimap_runs if t.name == "offlineimap" else a.runs) for t in tools}
        section = [f"## {title}", "",
                   f"{msgs:,} messages in {folders} folders (as Dovecot lists them, INBOX included), "
                   f"{size / 1e6:,.0f} MB on the server "
                   f"(`make-corpus.py {' '.join(corpus_args)}`).", ""]

        # (a) initial sync
        log(f"{title}: initial sync")
        order = tools + ([copy] if not a.skip_copy else [])
        runs[copy.name] = a.runs
        for i, t in schedule(order, runs):
            server.restore("pristine")
            t.reset_empty()
            os.sync()  # no dirty pages from the preparation flushed during the run
            self.record(key, "initial", t, self.one_run(t, key, "initial", i, expected))
        for t in tools:
            t.save_base()  # the synced copy that resync and change runs start from
        section += self.table(key, "initial", order, expected,
                              "Every run starts from an empty local store (and empty state: syncmail's "
                              "state dir, mbsync's SyncState, offlineimap's metadata). "
                              "`cp -r + sync` copies the server's Maildir tree and flushes it: "
                              "the disk's own limit for this case.")

        # (b) resync, nothing changed
        log(f"{title}: resync")
        for i, t in schedule(tools, runs):
            server.restore("pristine")
            t.restore_base()
            os.sync()
            self.record(key, "resync", t, self.one_run(t, key, "resync", i, expected))
        section += self.table(key, "resync", tools, expected,
                              "Every run starts from the tool's own synced copy of the same server.")

        # (c) change sync. The change is made once with doveadm on a copy of the pristine
        # server and snapshotted; every run restores that snapshot, so every tool and run
        # sees byte for byte the same server (same files, UIDs, mod-sequences), and starts
        # from its own copy synced before the change.
        log(f"{title}: preparing the change")
        server.restore("pristine")
        change_text = self.make_change(server, key)
        server.snapshot("changed")
        expected_change = server.counts()
        log(f"{title}: change sync")
        for i, t in schedule(tools, runs):
            server.restore("changed")
            t.restore_base()
            os.sync()
            self.record(key, "change", t, self.one_run(t, key, "change", i, expected_change))
        section += self.table(key, "change", tools, expected_change, change_text)

        server.stop()
        self.sections.append("\n".join(section))
        if not a.keep:
            rmtree(cdir)
        if key == "normal" and "tiny" in a.corpora:
            empty_grave()  # before the next corpus; after the last one, with the work dir

    def make_change(self, server, key):
        """On the running server: 100 new messages, 1% of the messages get \\Flagged, 50
        expunged. Deterministic (fixed seed); returns a sentence for the report."""
        a = self.args
        rng = random.Random(42)
        listing = server.doveadm("-f", "tab", "fetch", "-u", "test", "mailbox uid flags", "all").stdout
        rows = []
        for line in listing.splitlines()[1:]:  # header: mailbox uid flags
            mailbox, uid, flags = line.split("\t")
            rows.append((mailbox, int(uid), flags.split()))
        n_flag = max(1, round(len(rows) * a.change_flags_pct / 100))
        unflagged = [r for r in rows if "\\Flagged" not in r[2]]
        to_flag = rng.sample(unflagged, min(n_flag, len(unflagged)))
        chosen = {(r[0], r[1]) for r in to_flag}  # expunge other messages than those flagged
        rest = [r for r in rows if (r[0], r[1]) not in chosen]
        to_expunge = rng.sample(rest, min(a.change_expunge, len(rest)))

        def by_mailbox(sel):
            out = {}
            for r in sel:
                out.setdefault(r[0], []).append(r[1])
            return out

        for mailbox, uids in sorted(by_mailbox(to_flag).items()):
            server.doveadm("flags", "add", "-u", "test", "\\Flagged", "mailbox", mailbox, "uid", uidset(uids))
        for mailbox, uids in sorted(by_mailbox(to_expunge).items()):
            server.doveadm("expunge", "-u", "test", "mailbox", mailbox, "uid", uidset(uids))

        # New mail: another corpus of the same kind (another seed), delivered to INBOX when
        # INBOX holds mail, else spread over the folders (the --folders corpus has no INBOX
        # mail).
        newdir = self.work / key / "newmail"
        rmtree(newdir)
        extra = ["--tiny"] if key == "tiny" else []
        run([sys.executable, str(CORPUS), str(newdir), "--messages", str(a.change_new), "--seed", "7"] + extra,
            stdout=subprocess.DEVNULL)
        files = sorted(p for p in newdir.rglob("*") if p.is_file() and p.parent.name in ("cur", "new"))
        inbox = [r for r in rows if r[0] == "INBOX"]
        targets = ["INBOX"] if inbox else sorted({r[0] for r in rows})
        for i, f in enumerate(files):
            with open(f, "rb") as fh:
                server.doveadm("save", "-u", "test", "-m", targets[i % len(targets)], stdin=fh)
        rmtree(newdir)
        where = "INBOX" if inbox else f"{len(targets)} folders, round robin"
        return (f"The change, made on the server with doveadm: {len(files)} new messages (into {where}), "
                f"`\\Flagged` added to {len(to_flag)} messages ({a.change_flags_pct:g}%), "
                f"{len(to_expunge)} messages expunged. Every run starts from the tool's own copy synced "
                f"before the change, against the same changed server.")

    # ---- one run of one tool, checked

    def one_run(self, tool, key, scenario, i, expected):
        logdir = self.work / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        logfile = logdir / f"{key}-{scenario}-{tool.name.split()[0]}-{i}.log"
        server = tool.server
        cpu0 = server.cpu()
        figures, err = timed(tool, logfile, self.args.timeout)
        server.settle()
        server_cpu = server.cpu() - cpu0
        what = f"{key} {scenario} run {i}: {tool.name}"
        if figures is None:
            self.warn(f"{what}: {err}")
            return None
        wall, user, sys_, rss, rc = figures
        got = maildir_counts(tool.maildir)
        ok = True
        notes = []
        if rc != 0:
            ok = False
            notes.append(f"exit status {rc}")
            self.warn(f"{what}: exit status {rc}: {tail(logfile)}")
        if got[:2] != expected[:2]:
            ok = False
            notes.append(f"{got[0]}/{expected[0]} msgs, {got[1]}/{expected[1]} flagged")
            self.warn(f"{what}: has {got[0]} messages ({got[1]} flagged), the server has {expected[0]} "
                      f"({expected[1]} flagged)")
        # Sizes differ a little (line ends: the tools store LF), but a store much smaller
        # or larger than the server's has empty, cut or doubled messages.
        if not 0.9 <= got[2] / max(expected[2], 1) <= 1.1:
            ok = False
            notes.append(f"{got[2]:,} of {expected[2]:,} bytes")
            self.warn(f"{what}: its messages take {got[2]:,} bytes, the server's {expected[2]:,}")
        log(f"{what}: {wall:.3f} s wall, {user + sys_:.3f} s CPU, {rss / 1024:.0f} MiB, "
            f"server {server_cpu:.2f} s CPU" + ("" if ok else "  [" + "; ".join(notes) + "]"))
        return Result(wall, user, sys_, rss, server_cpu, ok, "; ".join(notes))

    def record(self, key, scenario, tool, result):
        self.results.setdefault((key, scenario, tool.name), []).append(result)

    # ---- report

    def summary(self, names):
        """One line per corpus and scenario: each tool's median wall time and its ratio to
        syncmail's, over the runs that passed."""
        def wall(key, scenario, name):
            rs = [r for r in self.results.get((key, scenario, name), []) if r is not None and r.ok]
            return statistics.median(r.wall for r in rs) if rs else None

        rows = ["## Summary: median wall seconds (÷ syncmail)", "",
                "| corpus | scenario | " + " | ".join(names) + " |",
                "|---|---|" + "---:|" * len(names)]
        for key, label in self.corpora:
            for scenario in SCENARIOS:
                base = wall(key, scenario, "syncmail")
                cells = []
                for name in names:
                    w = wall(key, scenario, name)
                    if w is None:
                        cells.append("–" if (key, scenario, name) not in self.results else "failed")
                    elif name == "syncmail" or not base:
                        cells.append(f"{w:.3f}")
                    else:
                        cells.append(f"{w:.3f} ({w / base:.2f})")
                rows.append(f"| {label} | {scenario} | " + " | ".join(cells) + " |")
        return rows + [""]

    def table(self, key, scenario, tools, expected, text):
        """The scenario's markdown table. Figures are medians over the runs that passed the
        check (timing a sync that did not finish says nothing); failed runs are counted and
        described in the last column."""
        def med(rs, f):
            return statistics.median(f(r) for r in rs)

        def passed(name):
            return [r for r in self.results.get((key, scenario, name), []) if r is not None and r.ok]

        rows = ["### " + SCENARIOS[scenario], "", text, "",
                "| tool | runs | wall s | wall min–max | CPU s (user+sys) | peak RSS MiB "
                "| wall ÷ syncmail | CPU ÷ syncmail | Dovecot CPU s | all messages? |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        base = passed("syncmail")
        for t in tools:
            all_runs = self.results.get((key, scenario, t.name), [])
            rs = passed(t.name)
            bad = [r for r in all_runs if r is None or not r.ok]
            check = f"yes ({expected[0]:,})" if not bad else f"**NO** in {len(bad)} of {len(all_runs)} runs: " + \
                "; ".join(sorted({r.note if r else "no figures (see warnings)" for r in bad}))
            if not rs:
                rows.append(f"| {t.name} | 0 of {len(all_runs)} | – | – | – | – | – | – | – | {check} |")
                continue
            wall, cpu = med(rs, lambda r: r.wall), med(rs, lambda r: r.cpu)
            rss = med(rs, lambda r: r.rss_kb) / 1024
            server = "–" if isinstance(t, CopyLimit) else f"{med(rs, lambda r: r.server_cpu):.2f}"
            rw = rc = "–"
            if t.name == "syncmail":
                rw = rc = "1"
            elif base:
                bw, bc = med(base, lambda r: r.wall), med(base, lambda r: r.cpu)
                rw = f"{wall / bw:.2f}" if bw > 0 else "–"
                rc = f"{cpu / bc:.2f}" if bc > 0 else "–"
            n = f"{len(rs)}" if len(rs) == len(all_runs) else f"{len(rs)} of {len(all_runs)}"
            rows.append(f"| {t.name} | {n} | {wall:.3f} | {min(r.wall for r in rs):.3f}–"
                        f"{max(r.wall for r in rs):.3f} | {cpu:.3f} | {rss:.0f} | {rw} | {rc} | {server} | {check} |")
        return rows + [""]


def schedule(tools, runs):
    """(run number, tool) in the order to run them: interleaved (run 1 of every tool, then
    run 2, ...) so that a burst of load from elsewhere on the machine hits all tools
    alike, and the order rotated from one round to the next so that no tool always goes
    first. runs: tool name -> how many runs."""
    for i in range(max(runs[t.name] for t in tools)):
        for t in tools[i % len(tools):] + tools[:i % len(tools)]:
            if i < runs[t.name]:
                yield i + 1, t


def uidset(uids):
    """1,2,3,7 -> '1:3,7' (an IMAP sequence set, what doveadm's `uid` search key takes)."""
    uids = sorted(uids)
    out, start, prev = [], uids[0], uids[0]
    for u in uids[1:] + [None]:
        if u is not None and u == prev + 1:
            prev = u
            continue
        out.append(f"{start}:{prev}" if start != prev else str(start))
        if u is not None:
            start = prev = u
    return ",".join(out)


# --------------------------------------------------------------------------------------
# Setup: packages, the syncmail binary, what the machine and the tools are.


def install(args):
    """Debian packages for whatever is missing (apt-get update once, only if needed)."""
    need = []
    if not (Path("/usr/sbin/dovecot").exists() and shutil.which("doveadm")):
        need.append(PACKAGES["dovecot"])
    if not Path(TIME).exists():
        need.append(PACKAGES["time"])
    if "mbsync" not in args.skip and not shutil.which("mbsync"):
        need.append(PACKAGES["mbsync"])
    if "offlineimap" not in args.skip and not shutil.which("offlineimap"):
        need.append(PACKAGES["offlineimap"])
    if not shutil.which("openssl"):
        need.append("openssl")
    if not need:
        return
    if args.no_install:
        raise SystemExit(f"missing: {' '.join(need)} (install them, or drop --no-install)")
    log(f"installing {' '.join(need)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + need, env=env, stdout=subprocess.DEVNULL)


def build(args):
    """The syncmail binary to measure, copied into the work dir so that a build started
    elsewhere during the benchmark cannot swap it mid-run."""
    src = args.syncmail
    if src is None:
        log("building syncmail (cargo build --release --locked -p syncmail-cli)")
        run(["cargo", "build", "--release", "--locked", "-q", "-p", "syncmail-cli"], cwd=ROOT)
        src = ROOT / "target" / "release" / "syncmail"
    dst = args.workdir / "bin" / "syncmail"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst


def output(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        return p.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


def machine(args):
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    df = output(["df", "-hT", str(args.workdir)]).splitlines()[-1].split()
    mount = output(["findmnt", "-no", "OPTIONS", "-T", str(args.workdir)])
    return [
        f"- CPU: {output(['nproc'])} cores available (nproc), {cpu}",
        f"- memory: {mem_kb / 1024 / 1024:.1f} GiB",
        f"- kernel: {platform.system()} {platform.release()}, {output(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}",
        f"- disk of the work dir: {df[0]} {df[1]}, {df[2]} total, {df[4]} free ({df[5]} used), "
        f"mounted on {df[6]}" + (f" ({mount})" if mount else ""),
        f"- load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
    ]


def versions(args):
    v = []
    if args.syncmail_bin:
        git = output(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
        v.append(f"- syncmail: {output([str(args.syncmail_bin), '--version'])} (git {git}"
                 + (", built from the working tree)" if args.syncmail is None else f", binary {args.syncmail})"))
    v.append(f"- Dovecot: {output(['/usr/sbin/dovecot', '--version'])}")
    if "mbsync" not in args.skip:
        v.append(f"- mbsync: {output(['mbsync', '--version'])}")
    if "offlineimap" not in args.skip:
        v.append(f"- offlineimap: {output(['offlineimap', '--version'])} (offlineimap3, "
                 f"{output(['/usr/bin/python3', '--version'])})")
    v.append(f"- GNU time: {output(['dpkg-query', '-W', '-f', '${Version}', 'time'])} (Debian package `time`)")
    return v


# --------------------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(
        prog="bench/run.sh", description="Benchmark syncmail against mbsync and offlineimap3 (download only, "
        "plain IMAP on 127.0.0.1). See bench/README.md.")
    p.add_argument("--quick", action="store_true",
                   help="small corpora (1,000 messages; 10,000 tiny), 3 runs: to try the harness")
    p.add_argument("--runs", type=int, help="timed runs per tool and scenario (default 5; --quick 3)")
    p.add_argument("--offlineimap-runs", type=int,
                   help="timed runs for offlineimap, which is slow (default 2; --quick: as --runs)")
    p.add_argument("--skip", action="append", default=[], metavar="TOOL",
                   help="leave out a tool: mbsync, offlineimap, or cp (the cp -r + sync row); "
                        "may be repeated or comma-separated")
    p.add_argument("--corpus", default="normal,tiny",
                   help="which corpora: normal (realistic mix), tiny (many small messages in folders); "
                        "default both")
    p.add_argument("--messages", type=int, help="size of the normal corpus (default 10000; --quick 1000)")
    p.add_argument("--tiny-messages", type=int, help="size of the tiny corpus (default 100000; --quick 10000)")
    p.add_argument("--tiny-folders", type=int, default=10, help="folders of the tiny corpus (default 10)")
    p.add_argument("--change-new", type=int, default=100, help="new messages in the change (default 100)")
    p.add_argument("--change-expunge", type=int, default=50, help="messages expunged in the change (default 50)")
    p.add_argument("--change-flags-pct", type=float, default=1.0,
                   help="percent of messages that get \\Flagged in the change (default 1)")
    p.add_argument("--two-way", action="store_true",
                   help="every tool syncs both ways (syncmail --flags ...,upload-contents, mbsync Sync All "
                        "+ Expunge Both, offlineimap without readonly); the work is the same download, "
                        "plus each tool's look for local changes. Default: download only")
    p.add_argument("--syncmail", type=Path, metavar="BIN", help="measure this binary instead of building one")
    p.add_argument("--no-install", action="store_true", help="never run apt-get; fail if something is missing")
    p.add_argument("--workdir", type=Path, default=BENCH / "work",
                   help="where servers, snapshots and local stores go (default bench/work; needs about "
                        "10x the corpus size)")
    p.add_argument("--results", type=Path, default=BENCH / "results", help="where the report goes")
    p.add_argument("--keep", action="store_true", help="keep the work dir (stores, logs) for inspection")
    p.add_argument("--rm-between-runs", action="store_true",
                   help="delete each finished run's directories at once, as before 2026-11-25, instead of "
                        "setting them aside until the corpus is done (see `discard`)")
    p.add_argument("--list-index", choices=["yes", "no"], default="yes",
                   help="Dovecot's mailbox_list_index (default yes, Dovecot's own default: the folder list and "
                   "each folder's STATUS figures are kept in one index, so STATUS need not open the folder; "
                   "no: every STATUS opens the folder, as the benchmark's server did before 2026-11-25)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds before one run is killed (default 3600)")
    a = p.parse_args()
    global GRAVE
    GRAVE = None if a.rm_between_runs else a.workdir / "grave"
    a.skip = {s.strip() for v in a.skip for s in v.split(",") if s.strip()}
    unknown = a.skip - {"syncmail", "mbsync", "offlineimap", "cp"}
    if unknown:
        p.error(f"--skip: unknown tool(s) {', '.join(sorted(unknown))}")
    a.skip_copy = "cp" in a.skip
    a.corpora = [c.strip() for c in a.corpus.split(",") if c.strip()]
    if not a.corpora or set(a.corpora) - {"normal", "tiny"}:
        p.error("--corpus takes normal, tiny or normal,tiny")
    if a.runs is None:
        a.runs = 3 if a.quick else 5
    if a.offlineimap_runs is None:
        a.offlineimap_runs = a.runs if a.quick else min(2, a.runs)
    if a.messages is None:
        a.messages = 1000 if a.quick else 10000
    if a.tiny_messages is None:
        a.tiny_messages = 10000 if a.quick else 100000
    if a.runs < 1 or a.offlineimap_runs < 1:
        p.error("runs must be at least 1")
    a.workdir = a.workdir.resolve()
    return a


def main():
    a = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: Dovecot's mail processes run as nobody (uid 65534)")
    if not CORPUS.exists():
        raise SystemExit(f"the corpus generator is not at {CORPUS} (set SYNCMAIL_CORPUS_SCRIPT)")
    command = os.environ.get("SYNCMAIL_BENCH_COMMAND") or shlex.join(["bench/bench.py"] + sys.argv[1:])
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()

    install(a)
    a.workdir.mkdir(parents=True, exist_ok=True)
    a.syncmail_bin = build(a) if "syncmail" not in a.skip else None
    bench = Bench(a)

    # SIGTERM as ^C, so that the finally below stops Dovecot.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    head = [f"# syncmail benchmark, {started:%Y-%m-%d %H:%M} UTC", "",
            f"Command: `{command}`", "", "Machine:", ""] + machine(a) + ["", "Versions:", ""] + versions(a)
    try:
        if "normal" in a.corpora:
            bench.corpus("normal", f"Corpus: {a.messages:,} messages, realistic mix", f"{a.messages:,} mixed",
                         ["--messages", str(a.messages)])
        if "tiny" in a.corpora:
            folders = ",".join(f"F{i}" for i in range(a.tiny_folders))
            bench.corpus("tiny", f"Corpus: {a.tiny_messages:,} small messages in {a.tiny_folders} folders",
                         f"{a.tiny_messages:,} tiny", ["--messages", str(a.tiny_messages), "--tiny", "--folders", folders])
    finally:
        if getattr(bench, "server", None):
            bench.server.stop()

    minutes = (time.monotonic() - t0) / 60
    tools = [t for t in TOOLS if t not in a.skip]
    how = [
        "How: every tool downloads from the same private Dovecot over **plain IMAP (no TLS) on 127.0.0.1**, "
        "so that the comparison is about sync, not crypto, each into its own local directory. "
        f"Dovecot runs with `mailbox_list_index = {a.list_index}`"
        + (" (its default)" if a.list_index == "yes" else " (not its default; `--list-index no`)") + ". "
        f"Tools: {', '.join(tools)}. "
        + ("**Two-way** (`--two-way`): syncmail `--flags download-hierarchy,download-contents,upload-contents`, "
           "mbsync `Sync All` with `Expunge Both`, offlineimap without `readonly`; "
           if a.two_way else
           "**Download only**: syncmail `--flags download-hierarchy,download-contents`, mbsync `Sync Pull` with "
           "`Expunge Near`, offlineimap with a `readonly` remote; ")
        + "mbsync and offlineimap with fsync on (their default; syncmail makes its writes durable too). "
        "One untimed warm-up sync per tool first (Dovecot's indexes and caches built, page cache "
        "warm); then every timed run starts from a fresh copy of the same server directory and, for resync "
        "and change, of the tool's own synced store; `sync` before each run; Dovecot is restarted for "
        "each run and gets two logins (no mailbox selected) before it, so that its auth and login "
        "processes are up as on a server that runs all the time. After the warm-ups, 2 s later, "
        "`doveadm mailbox status` on every folder settles Dovecot's indexes (the resync is a poll of a "
        "server polled before, not the first look after a bulk download; see `corpus` in bench.py); the "
        "change is made after that and is not settled. "
        + ("Finished runs' directories were deleted before the next run (`--rm-between-runs`): on ext4 "
           "without a journal that slows the next run's file creation." if a.rm_between_runs else
           "Finished runs' directories are set aside (renamed), not deleted, until the corpus is done: on "
           "ext4 without a journal, deleting many files slows file creation for a minute or more after "
           "(see `discard` in bench.py)."),
        "",
        f"Figures: **medians** of {a.runs} runs per tool and scenario"
        + (f" (offlineimap: {a.offlineimap_runs}, it is slow)" if "offlineimap" in tools
           and a.offlineimap_runs != a.runs else "")
        + ", runs interleaved across tools in rotating order. Wall seconds; CPU seconds (user + sys) and peak "
        "RSS of the client, as GNU time `-f '%e %U %S %M'` reports them (CPU read at µs resolution); Dovecot "
        "CPU = the server's imap and imap-login processes for the session. Ratios are tool ÷ syncmail: "
        "above 1, syncmail is faster. \"all messages?\" compares each store after each run with the server: "
        "number of messages, number flagged, total size within 10 %.",
        "",
        f"Load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; "
        f"the whole benchmark took {minutes:.1f} min.",
    ]
    warn = ["## Warnings", ""] + [f"- WARNING: {w}" for w in bench.warnings] + [""] if bench.warnings else []
    names = tools + ([CopyLimit.name] if not a.skip_copy else [])
    report = "\n".join(head + [""] + how + [""] + warn + bench.summary(names) + bench.sections) + "\n"
    print(report)

    a.results.mkdir(parents=True, exist_ok=True)
    stem = f"{started:%Y-%m-%d}" + ("-quick" if a.quick else "") + ("-two-way" if a.two_way else "")
    out = a.results / f"{stem}.md"
    n = 2
    while out.exists():
        out = a.results / f"{stem}-{n}.md"
        n += 1
    out.write_text(report)
    log(f"report written to {out}")
    if a.keep:
        log(f"work dir kept: {a.workdir}")
    elif bench.warnings:  # keep the logs of the runs, drop the big directories
        for p in a.workdir.iterdir():
            if p.name != "logs":
                rmtree(p) if p.is_dir() else p.unlink()
        log(f"the runs' logs are in {a.workdir / 'logs'}")
    else:
        rmtree(a.workdir)
    return 1 if bench.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
