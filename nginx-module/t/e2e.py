#!/usr/bin/env python3
"""End-to-end tests of ngx_http_ase_module: a real nginx on 127.0.0.1.

Run by `scripts/nginx-module.sh test` (`make test-nginx`). Python standard
library only. nginx runs with 4 workers (`reuseport`, so new connections
spread over them), realip from X-Forwarded-For, its prefix, logs and state
under a temporary directory, and the sample configuration of
examples/demo/. Each test uses its own client addresses (X-Forwarded-For), so
detections of one test do not leak into another.

Tests that need `target/release/ase-cli` (list changes shared by every
worker through the state store) or `target/release/ase-abs-ref` (the
reference ABS server) are reported as SKIP while those binaries do not exist,
and test_worker_without_engine (workers under another user than the
master's) when not run as root; with ASE_E2E_STRICT=1 a skip fails the run.

Usage: e2e.py --nginx BIN --module SO --root REPO [TEST...]
"""

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

WORKERS = 4
CONVERGE = 1.0  # a list change must be enforced by every worker within this
OK_BODY = "backend ok\n"
UNAUTHORIZED = "Error: Unauthorized"


class Skip(Exception):
    pass


METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def check_exposition(text):
    """A strict check of the Prometheus text exposition format (0.0.4):
    every family has one HELP and one TYPE line before its samples and its
    samples together; names, label names and escapes as the format allows;
    no sample twice; values are numbers, counters not negative; counter
    names end in _total.  `promtool check metrics` as well, when it is
    installed."""
    assert text.endswith("\n"), "no final newline"
    families = {}
    seen = set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        assert line, "empty " + where
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[0] == "#" and parts[1] in ("HELP", "TYPE") \
                and len(parts) >= 3, where
            name = parts[2]
            assert METRIC_NAME.match(name), where
            f = families.setdefault(name, {"help": 0, "type": None,
                                           "samples": 0})
            assert f["samples"] == 0, "%s after samples: %s" % (parts[1], where)
            if parts[1] == "HELP":
                assert len(parts) == 4 and parts[3], where
                assert not re.search(r"\\[^\\n]", parts[3]), where
                f["help"] += 1
                assert f["help"] == 1, "HELP twice: " + where
            else:
                assert f["type"] is None, "TYPE twice: " + where
                assert len(parts) == 4 and parts[3] in (
                    "counter", "gauge", "histogram", "summary", "untyped"), where
                f["type"] = parts[3]
                if f["type"] == "counter":
                    assert name.endswith("_total"), where
            current = name
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample: " + where
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert name == current, "sample outside its family: " + where
        f = families[name]
        assert f["help"] == 1 and f["type"], "no HELP/TYPE: " + where
        f["samples"] += 1
        pairs = []
        rest = labels[1:-1] if labels else ""
        while rest:
            lm = LABEL.match(rest)
            assert lm, "bad label: " + where
            pairs.append((lm.group(1), lm.group(2)))
            rest = rest[lm.end():]
        names = [k for k, _ in pairs]
        assert len(names) == len(set(names)), "label twice: " + where
        key = (name, tuple(sorted(pairs)))
        assert key not in seen, "sample twice: " + where
        seen.add(key)
        v = float(value)
        if f["type"] == "counter":
            assert v >= 0, where
    for name, f in families.items():
        assert f["samples"], "family without samples: " + name
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "promtool: " + r.stdout + r.stderr
    return bool(promtool)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spawn_abs(abs_bin, attacklist, traffic_dir):
    """The reference ABS server on a free port: (process, "host:port")."""
    proc = subprocess.Popen(
        [abs_bin, "--attacklist", attacklist,
         "--listen", "127.0.0.1:0", "--access-key", "demo_access",
         "--secret-key", "demo_secret", "--traffic-dir", traffic_dir],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        raise AssertionError("ase-abs-ref said %r" % line)
    return proc, m.group(1)


def set_abs_endpoint(conf_dir, endpoint):
    abs_conf = os.path.join(conf_dir, "abs.conf")
    text = open(abs_conf).read()
    text = re.sub(r"(?m)^abs_endpoint=.*$", "abs_endpoint=" + endpoint, text)
    with open(abs_conf, "w") as f:
        f.write(text)


def proc_status(pid, field):
    """A number from /proc/PID/status (VmRSS in kB, Threads)."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def jwt(claims):
    def b64(d):
        raw = json.dumps(d).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return b64({"alg": "HS256", "typ": "JWT"}) + "." + b64(claims) + ".c2ln"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def verdict(self):
        return self.headers.get("x-ase-verdict", "")

    @property
    def worker(self):
        return self.headers.get("x-worker", "")

    def __repr__(self):
        return "%d verdict=%s body=%r" % (self.status, self.verdict, self.body[:80])


class Nginx:
    """One nginx with the module, in its own prefix under `tmp`."""

    def __init__(self, args, tmp, conf_dir, name="nginx", workers=WORKERS,
                 extra_http="", extra_server="", user=None):
        self.args = args
        self.nworkers = workers
        self.prefix = os.path.join(tmp, name)
        self.port = free_port()
        self.port_reject = free_port()
        self.port_backend = free_port()
        self.conf_dir = conf_dir
        self.master = None
        for d in ("logs", "tmp", "html"):
            os.makedirs(os.path.join(self.prefix, d), exist_ok=True)
        with open(os.path.join(self.prefix, "html", "ok.txt"), "w") as f:
            f.write(OK_BODY)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "logs", "error.log")
        self.access_log = os.path.join(self.prefix, "logs", "access.log")
        if user:
            user = "user %s;" % user
        else:
            user = "user root;" if os.geteuid() == 0 else ""
        p = self.prefix
        with open(self.conf, "w") as f:
            f.write(f"""
load_module {args.module};
{user}
worker_processes {workers};
error_log {self.error_log} info;
pid {p}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    log_format ase '$remote_addr "$request_method $uri" $status $ase_verdict';
    access_log {self.access_log} ase;
    default_type text/plain;
    keepalive_requests 100000;

    ase_config {conf_dir}/ase.conf;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    {extra_http}

    server {{
        listen 127.0.0.1:{self.port} reuseport;
        root {p}/html;
        ase on;
        add_header X-ASE-Verdict $ase_verdict always;
        add_header X-ASE-API $ase_api always;
        add_header X-ASE-Source $ase_source always;
        add_header X-ASE-Matched $ase_matched always;
        add_header X-Worker $pid always;
        {extra_server}

        location / {{
            proxy_pass http://127.0.0.1:{self.port_backend};
        }}
        location = /ase_status {{
            ase off;
            ase_status;
        }}
        location /open/ {{
            ase off;
            try_files /ok.txt =404;
        }}
    }}

    server {{
        listen 127.0.0.1:{self.port_reject};
        root {p}/html;
        ase on;
        ase_unknown_api reject;
        add_header X-ASE-Verdict $ase_verdict always;
        location / {{
            proxy_pass http://127.0.0.1:{self.port_backend};
        }}
    }}

    # the API backend: answers every method
    server {{
        listen 127.0.0.1:{self.port_backend};
        ase off;
        access_log off;
        location / {{
            return 200 "{OK_BODY.strip()}\\n";
        }}
    }}
}}
""")

    def cmd(self, *extra):
        return [self.args.nginx, "-p", self.prefix + "/", "-c", self.conf,
                "-g", "daemon on;"] + list(extra)

    def start(self):
        r = subprocess.run(self.cmd(), capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise AssertionError("nginx did not start: " + r.stderr)
        self.master = int(open(os.path.join(self.prefix, "nginx.pid")).read())
        self.wait_workers(set())

    def workers(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.master)],
                             capture_output=True, text=True).stdout
        pids = set()
        for line in out.split():
            pid = int(line)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if b"worker process" in cmdline and b"shutting down" not in cmdline:
                pids.add(pid)
        return pids

    def all_children(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.master)],
                             capture_output=True, text=True).stdout
        return {int(x) for x in out.split()}

    def wait_workers(self, old, timeout=10):
        """Waits until all workers run, none of them in `old`, and the
        old ones have exited (no stuck thread keeps one alive)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            w = self.workers()
            if len(w) == self.nworkers and not (w & old) \
                    and not (self.all_children() & old):
                # every worker answers (its engine is up)
                return w
            time.sleep(0.05)
        raise AssertionError("workers did not settle: now %s, old %s"
                             % (self.all_children(), old))

    def reload(self):
        old = self.workers()
        os.kill(self.master, signal.SIGHUP)
        return self.wait_workers(old)

    def stop(self):
        if not self.master:
            return
        try:
            os.kill(self.master, signal.SIGQUIT)
        except ProcessLookupError:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            try:
                os.kill(self.master, 0)
            except ProcessLookupError:
                self.master = None
                return
            time.sleep(0.05)
        os.kill(self.master, signal.SIGKILL)
        self.master = None
        raise AssertionError("nginx did not stop within 10 s on SIGQUIT")

    def request(self, method, path, ip=None, headers=None, body=None,
                conn=None, port=None):
        h = dict(headers or {})
        if ip:
            h["X-Forwarded-For"] = ip
        c = conn or http.client.HTTPConnection("127.0.0.1", port or self.port,
                                               timeout=5)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        if conn is None:
            c.close()
        return resp


class Suite:
    def __init__(self, args):
        self.args = args
        self.root = args.root
        self.tmp = tempfile.mkdtemp(prefix="ase-e2e-")
        self.cli_bin = os.path.join(self.root, "target/release/ase-cli")
        self.abs_bin = os.path.join(self.root, "target/release/ase-abs-ref")
        self.conf_dir = os.path.join(self.tmp, "conf")
        shutil.copytree(os.path.join(self.root, "examples/demo"), self.conf_dir,
                        ignore=shutil.ignore_patterns("state"))
        self.abs_proc = None
        self.abs_endpoint = None
        self.traffic_dir = os.path.join(self.tmp, "traffic")
        self.attacklist = os.path.join(self.tmp, "attacklist.json")
        with open(self.attacklist, "w") as f:
            json.dump({"ips": []}, f)
        self.start_abs()
        self.nginx = Nginx(args, self.tmp, self.conf_dir)
        self.others = []

    # -- helpers ---------------------------------------------------------

    def start_abs(self):
        if os.access(self.abs_bin, os.X_OK):
            self.abs_proc, endpoint = spawn_abs(self.abs_bin, self.attacklist,
                                                self.traffic_dir)
            self.abs_endpoint = endpoint
        else:
            endpoint = "127.0.0.1:%d" % free_port()  # nobody listens
        set_abs_endpoint(self.conf_dir, endpoint)

    def need_cli(self):
        if not os.access(self.cli_bin, os.X_OK):
            raise Skip("needs target/release/ase-cli (store branch)")

    def abs_control(self, mode):
        c = http.client.HTTPConnection(self.abs_endpoint, timeout=5)
        c.request("GET", "/__control?mode=%s&arg=" % mode)
        assert c.getresponse().status == 200
        c.close()

    def traffic_records(self):
        """Every traffic record the reference ABS server received."""
        out = []
        if not os.path.isdir(self.traffic_dir):
            return out
        for name in sorted(os.listdir(self.traffic_dir)):
            if name.endswith(".json"):
                with open(os.path.join(self.traffic_dir, name)) as f:
                    out.extend(json.load(f)["records"])
        return out

    def metrics(self):
        return self.metrics_of(self.nginx)

    @staticmethod
    def metrics_of(nginx):
        r = nginx.request("GET", "/ase_status")
        assert r.status == 200, r
        return {m.group(1): int(m.group(2)) for m in
                re.finditer(r"(?m)^(\w+(?:\{[^}]*\})?) (\d+)$", r.body)}

    @staticmethod
    def status_lines(text):
        return {k.strip(): v for k, _, v in
                (l.partition(": ") for l in text.splitlines()) if v}

    def need_abs(self):
        self.need_cli()
        if not os.access(self.abs_bin, os.X_OK):
            raise Skip("needs target/release/ase-abs-ref (abs branch)")

    def cli(self, *argv, check=True, conf_dir=None):
        r = subprocess.run([self.cli_bin, "--config",
                            os.path.join(conf_dir or self.conf_dir, "ase.conf"),
                            "-u", "admin", "-p", "admin"] + list(argv),
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError("ase-cli %s: exit %d: %s"
                                 % (" ".join(argv), r.returncode, r.stderr))
        return r.stdout

    def get(self, path, **kw):
        return self.nginx.request("GET", path, **kw)

    def converge(self, send, status, within=CONVERGE, what=""):
        """Sends requests on new connections until every worker answers
        `status`; fails if that takes longer than `within` seconds. Then 20
        more must all answer `status`."""
        t0 = time.monotonic()
        last = {}
        while True:
            r = send()
            last[r.worker] = r
            done = len(last) >= WORKERS and all(
                x.status == status for x in last.values())
            took = time.monotonic() - t0
            if done:
                break
            if took > within:
                raise AssertionError(
                    "%s: not %d on every worker within %.1f s: %s"
                    % (what, status, within,
                       {k: repr(v) for k, v in last.items()}))
        for _ in range(20):
            r = send()
            assert r.status == status, "%s: then %r" % (what, r)
        return took

    def log_text(self):
        with open(self.nginx.error_log, errors="replace") as f:
            return f.read()

    # -- tests without ase-cli --------------------------------------------

    def test_allow(self):
        r = self.get("/shop/items", ip="10.1.0.1")
        assert r.status == 200 and r.body == OK_BODY, r
        assert r.verdict == "allow", r
        r = self.get("/open/x", ip="10.1.0.1")
        assert r.status == 200 and r.verdict == "", r

    def test_unknown_api(self):
        r = self.get("/nowhere", ip="10.1.0.2")
        assert r.status == 200 and r.verdict == "allow:unknown_api", r
        r = self.nginx.request("GET", "/nowhere", ip="10.1.0.2",
                               port=self.nginx.port_reject)
        assert r.status == 503, r
        assert r.body == "Error: Unknown API", r
        assert r.verdict == "block:unknown_api", r
        r = self.nginx.request("GET", "/shop/x", ip="10.1.0.2",
                               port=self.nginx.port_reject)
        assert r.status == 200, r

    def detect_then_blocked(self, first, ip, what):
        """`first(conn)` triggers a detection for `ip`; then a real API call
        is 403 on the same connection (same worker) and, with the state
        store, on every worker within 1 s."""
        c = http.client.HTTPConnection("127.0.0.1", self.nginx.port, timeout=5)
        first(c)
        r = self.get("/shop/items", ip=ip, conn=c)
        c.close()
        assert r.status == 403 and r.body == UNAUTHORIZED, (what, r)
        assert r.verdict == "block:deny_list", (what, r)
        if os.access(self.cli_bin, os.X_OK):
            self.converge(lambda: self.get("/shop/items", ip=ip), 403,
                          what=what + " on every worker")

    def test_decoy_in_context(self):
        ip = "10.2.0.1"

        def first(c):
            r = self.get("/shop/admin", ip=ip, conn=c)
            assert r.status == 200 and r.body == '{"admin": "welcome"}', r
            assert r.verdict == "respond:decoy", r
        self.detect_then_blocked(first, ip, "in-context decoy")
        r = self.get("/shop/items", ip="10.2.0.99")
        assert r.status == 200, r

    def test_decoy_out_of_context(self):
        ip = "10.2.0.2"

        def first(c):
            r = self.get("/wp-admin/login.php", ip=ip, conn=c)
            assert r.status == 404 and r.body == "Not Found", r
            assert r.verdict == "respond:decoy", r
        self.detect_then_blocked(first, ip, "out-of-context decoy")

    def test_pattern_method(self):
        ip = "10.3.0.1"

        def first(c):
            r = self.nginx.request("DELETE", "/shop/items/1", ip=ip, conn=c)
            assert r.status == 400, r
            assert r.body == "Error: request does not match the shop API", r
            assert r.verdict == "respond:method", r
        self.detect_then_blocked(first, ip, "method violation")

    def test_pattern_content_type(self):
        ip = "10.3.0.2"

        def first(c):
            r = self.nginx.request("POST", "/shop/items", ip=ip, conn=c,
                                   body="<x/>",
                                   headers={"Content-Type": "text/xml"})
            assert r.status == 400, r
            assert r.body == "Error: request does not match the shop API", r
            assert r.verdict == "respond:content_type", r
        r = self.nginx.request("POST", "/shop/items", ip="10.3.0.3",
                               body="{}",
                               headers={"Content-Type": "application/json"})
        assert r.status == 200 and r.verdict == "allow", r
        self.detect_then_blocked(first, ip, "content-type violation")

    def test_pattern_protocol(self):
        ip = "10.3.0.4"

        def first(c):
            r = self.get("/tls/data", ip=ip, conn=c)
            assert r.status == 403 and r.body == "Error: HTTPS required", r
            assert r.verdict == "respond:protocol", r
        self.detect_then_blocked(first, ip, "protocol violation")

    def test_redirect(self):
        r = self.get("/secure/page?a=1", ip="10.3.0.5",
                     headers={"Host": "shop.example.com"})
        assert r.status == 301, r
        assert r.headers.get("location") == \
            "https://shop.example.com/secure/page?a=1", r.headers
        assert r.verdict == "redirect:protocol", r

    def test_monitor_mode(self):
        ip = "10.4.0.1"
        r = self.nginx.request("DELETE", "/monitor/x", ip=ip)
        assert r.status == 200 and r.body == OK_BODY, r
        assert r.verdict == "would_block:method", r
        r = self.get("/monitor/x", ip=ip)
        assert r.status == 200, r
        time.sleep(0.2)
        log = open(self.nginx.access_log).read()
        assert re.search(r'10\.4\.0\.1 "DELETE /monitor/x" 200 would_block:method',
                         log), log[-500:]

    def test_status(self):
        def metric(text, name):
            m = re.search(r"(?m)^" + re.escape(name) + r" (\d+)$", text)
            assert m, "no %s in:\n%s" % (name, text)
            return int(m.group(1))
        time.sleep(1.2)  # every worker has published its counters
        before = self.get("/ase_status")
        assert before.status == 200, before
        assert before.headers["content-type"].startswith("text/plain"), before
        n0 = metric(before.body, "ase_requests_checked_total")
        d0 = metric(before.body, 'ase_requests_blocked_total{reason="decoy"}')
        workers = set()
        for i in range(40):
            workers.add(self.get("/shop/items", ip="10.5.0.1").worker)
        self.get("/wp-admin/", ip="10.5.0.2")
        time.sleep(1.2)
        after = self.get("/ase_status").body
        # counted on all workers, not only the one answering the scrape
        assert len(workers) > 1, workers
        assert metric(after, "ase_requests_checked_total") >= n0 + 41, after
        assert metric(after, 'ase_requests_blocked_total{reason="decoy"}') \
            >= d0 + 1, after
        for name in ('ase_requests_allowed_total{reason="none"}',
                     'ase_requests_allowed_total{reason="fail_mode"}',
                     "ase_detections_total",
                     "ase_deny_list_entries", "ase_allow_list_entries",
                     'ase_requests_would_block_total{reason="method"}',
                     'ase_deny_list_matches_total{source="decoy"}',
                     'ase_api_requests_total{api="shop",outcome="allowed"}'):
            metric(after, name)
        # only reasons that can happen: nothing is stopped for "none"
        for absent in ('ase_requests_blocked_total{reason="none"}',
                       'ase_requests_blocked_total{reason="allow_list"}',
                       'ase_requests_would_block_total{reason="decoy"}'):
            assert absent not in after, absent
        check_exposition(after)
        assert "# TYPE ase_requests_checked_total counter" in after

    def test_config_errors(self):
        """nginx -t reports configuration errors with the engine's message."""
        def nginx_t(conf_text, ase_conf=None, api=None):
            d = tempfile.mkdtemp(dir=self.tmp)
            shutil.copytree(self.conf_dir, d + "/conf",
                            ignore=shutil.ignore_patterns("state"))
            if ase_conf is not None:
                with open(d + "/conf/ase.conf", "a") as f:
                    f.write(ase_conf)
            if api is not None:
                with open(d + "/conf/api/broken.json", "w") as f:
                    f.write(api)
            conf = d + "/nginx.conf"
            with open(conf, "w") as f:
                f.write(("load_module %s;\nerror_log %s/error.log;\n"
                         "pid %s/nginx.pid;\nevents {}\nhttp {\n" %
                         (self.args.module, d, d))
                        + conf_text.replace("CONF", d + "/conf") + "\n}\n")
            r = subprocess.run([self.args.nginx, "-t", "-p", d + "/", "-c", conf],
                               capture_output=True, text=True, timeout=30)
            return r.returncode, r.stderr

        rc, err = nginx_t("ase_config CONF/ase.conf; server { ase on; }")
        assert rc == 0 and "test is successful" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf;", ase_conf="\nenable_magic=true\n")
        assert rc == 1 and "[emerg]" in err and "enable_magic" in err \
            and "ase.conf" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf;", ase_conf="\nenable_xff=maybe\n")
        assert rc == 1 and "enable_xff" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf;",
                          api='{"api_metadata": {"url": 5, "hostname": "*"}}')
        assert rc == 1 and "broken" in err and "url" in err, err
        rc, err = nginx_t("ase_config CONF/missing.conf;")
        assert rc == 1 and "missing.conf" in err, err
        rc, err = nginx_t("server { ase on; }")
        assert rc == 1 and "requires \"ase_config\"" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf; server { location / { ase_status; } }")
        assert rc == 0, err
        rc, err = nginx_t("server { location / { ase_status; } }")
        assert rc == 1 and "ase_config" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf; ase_unknown_api maybe;")
        assert rc == 1 and "maybe" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf; ase_config CONF/ase.conf;")
        assert rc == 1 and "duplicate" in err, err
        rc, err = nginx_t("ase_config CONF/ase.conf; ase_log_level debug;")
        assert rc == 1 and "debug" in err, err
        # ASE keys without effect here are named (not ase-server's)
        rc, err = nginx_t("ase_config CONF/ase.conf;",
                          ase_conf="\nenable_cluster=true\nmode=sideband\n")
        assert rc == 0 and "[notice]" in err and "enable_cluster" in err \
            and "mode" not in err.split("enable_cluster")[1], err

    def test_reload(self):
        """Reloads keep enforcing; old workers exit; the master never runs
        a thread of the engine, and does not grow."""
        n = self.nginx

        def threads(pid):
            return proc_status(pid, "Threads")

        def rss_kb(pid):
            return proc_status(pid, "VmRSS")

        blocked = None
        if os.access(self.cli_bin, os.X_OK):
            blocked = "10.6.0.1"
            self.cli("add_blacklist", "ip", blocked)
            self.converge(lambda: self.get("/shop/items", ip=blocked), 403,
                          what="manual ip before reload")
        n.reload()
        n.reload()
        rss0 = rss_kb(n.master)
        for _ in range(8):
            n.reload()
        assert threads(n.master) == 1, "master has %d threads" % threads(n.master)
        grew = rss_kb(n.master) - rss0
        assert grew < 4096, "master RSS grew %d kB over 8 reloads" % grew
        ip = "10.6.0.2"

        def first(c):
            r = self.get("/shop/admin", ip=ip, conn=c)
            assert r.status == 200 and r.verdict == "respond:decoy", r
        self.detect_then_blocked(first, ip, "decoy after reload")
        if blocked:
            self.converge(lambda: self.get("/shop/items", ip=blocked), 403,
                          what="manual ip after reload")
            self.cli("delete_blacklist", "ip", blocked)

    def test_reload_soak(self):
        """50 reloads under traffic, the ABS poller busy (its own ABS
        server, a list of 6000 entries polled every second, traffic
        shipped): every request is answered as it should be, no worker of
        an old generation is left, and the last generation's workers have
        the threads and, within 8 MB, the memory of the first one's.

        One failure is allowed, and retried: a request sent on a
        keep-alive connection that the server closes before answering
        it.  A worker that shuts down closes its idle keep-alive
        connections (nginx's graceful reload), and a request can cross
        that close on the wire; HTTP lets a client retry an idempotent
        request then (RFC 9112, 9.3.1), as browsers do.  A request on a
        new connection must never fail: the listening sockets stay open
        across reloads."""
        self.need_abs()
        reloads = 50
        d = tempfile.mkdtemp(dir=self.tmp)
        conf = d + "/conf"
        shutil.copytree(self.conf_dir, conf,
                        ignore=shutil.ignore_patterns("state"))
        listed = ["10.60.%d.%d" % (i // 250, i % 250 + 1)
                  for i in range(5000)]
        with open(d + "/attacklist.json", "w") as f:
            json.dump({"ips": listed,
                       "oauth_tokens": ["soak-token-%d" % i
                                        for i in range(1000)]}, f)
        abs_proc, endpoint = spawn_abs(self.abs_bin, d + "/attacklist.json",
                                       d + "/traffic")
        n = None
        stop = threading.Event()
        threads = []
        try:
            set_abs_endpoint(conf, endpoint)
            n = Nginx(self.args, d, conf, name="soak")
            self.others.append(n)
            n.start()
            self.converge(lambda: n.request("GET", "/shop/items",
                                            ip=listed[-1]),
                          403, within=15, what="ABS list in force")

            answers = {"new": 0, "keep-alive": 0}
            retried = [0]
            failures = []

            def client(keepalive):
                kind = "keep-alive" if keepalive else "new"
                conn = None
                i = 0
                while not stop.is_set():
                    i += 1
                    ip = listed[i * 7 % len(listed)] if i % 3 == 0 \
                        else "10.61.%d.%d" % (i % 2, i % 250 + 1)
                    want = 403 if i % 3 == 0 else 200
                    try:
                        if not keepalive:
                            r = n.request("GET", "/shop/items", ip=ip)
                        else:
                            reused = conn is not None
                            if conn is None:
                                conn = http.client.HTTPConnection(
                                    "127.0.0.1", n.port, timeout=5)
                            try:
                                r = n.request("GET", "/shop/items", ip=ip,
                                              conn=conn)
                            except (http.client.RemoteDisconnected,
                                    ConnectionResetError, BrokenPipeError):
                                if not reused:
                                    raise
                                conn.close()
                                conn = http.client.HTTPConnection(
                                    "127.0.0.1", n.port, timeout=5)
                                retried[0] += 1
                                r = n.request("GET", "/shop/items", ip=ip,
                                              conn=conn)
                    except Exception as e:
                        failures.append("%s %s: %r" % (kind, ip, e))
                        if conn is not None:
                            conn.close()
                            conn = None
                        continue
                    answers[kind] += 1
                    if r.status != want:
                        failures.append("%s %s: %r" % (kind, ip, r))
                if conn is not None:
                    conn.close()

            for keepalive in (False, True):
                t = threading.Thread(target=client, args=(keepalive,),
                                     daemon=True)
                t.start()
                threads.append(t)
            time.sleep(3)
            first = {pid: (proc_status(pid, "VmRSS"),
                           proc_status(pid, "Threads"))
                     for pid in n.workers()}
            t0 = time.monotonic()
            for _ in range(reloads):
                n.reload()
            took = time.monotonic() - t0
            time.sleep(3)
            stop.set()
            for t in threads:
                t.join(timeout=10)
            last = {pid: (proc_status(pid, "VmRSS"),
                          proc_status(pid, "Threads"))
                    for pid in n.workers()}
        finally:
            stop.set()
            abs_proc.terminate()
            abs_proc.wait(timeout=10)
        assert not failures, "%d failed requests: %s" % (
            len(failures), "; ".join(failures[:10]))
        assert answers["new"] > reloads and answers["keep-alive"] > reloads, \
            answers
        # no worker of an old generation left, and no other child
        assert n.all_children() == set(last) and len(last) == WORKERS, \
            (n.all_children(), last)
        rss0 = max(v[0] for v in first.values())
        rss = max(v[0] for v in last.values())
        assert rss <= rss0 + 8192, \
            "worker RSS %d kB after %d reloads, %d kB before" % (
                rss, reloads, rss0)
        threads0 = sorted(v[1] for v in first.values())
        threads1 = sorted(v[1] for v in last.values())
        assert threads1 == threads0, (threads0, threads1)
        n.stop()
        self.others.remove(n)
        log = open(n.error_log, errors="replace").read()
        bad = [l for l in log.splitlines() if re.search(
            r"\[(alert|emerg|crit)\]|exited on signal|exited with fatal code", l)]
        assert not bad, "\n".join(bad[:10])
        print("    %d reloads in %.0f s; %d requests on new connections, %d "
              "on keep-alive ones (%d retried after a reload closed the "
              "connection); worker RSS %d -> %d kB, threads %s"
              % (reloads, took, answers["new"], answers["keep-alive"],
                 retried[0], rss0, rss, threads1))

    # -- loud failures, traced blocks, metrics -----------------------------

    def test_block_traced(self):
        """Every request ase stops leaves one error-log line at
        ase_log_level (error by default, as the access module's): client,
        API, reason, source and identifier kind, never the identifier or
        the request line; $ase_api, $ase_source and $ase_matched say the
        same to access_log and add_header."""
        self.need_cli()
        ip, key = "10.20.0.1", "key-e2e-1"
        self.cli("add_blacklist", "ip", ip)
        self.cli("add_blacklist", "api_key", "X-API-Key", key)
        try:
            self.converge(lambda: self.get("/shop/items", ip=ip), 403,
                          what="manual ip")
            r = self.get("/shop/items", ip=ip)
            assert (r.headers.get("x-ase-api"), r.headers.get("x-ase-source"),
                    r.headers.get("x-ase-matched")) \
                == ("shop", "manual", "ip"), r.headers
            self.converge(lambda: self.get("/shop/items?page=" + key,
                                           ip="10.20.0.2",
                                           headers={"X-API-Key": key}),
                          403, what="manual api key")
            r = self.get("/shop/admin", ip="10.20.0.3")
            assert r.verdict == "respond:decoy" \
                and r.headers.get("x-ase-api") == "shop" \
                and "x-ase-source" not in r.headers, r.headers
            r = self.get("/shop/items", ip="10.20.0.4")
            assert r.status == 200 and "x-ase-matched" not in r.headers, r
            r = self.get("/shop/items", ip="10.20.0.5",
                         headers={"X-API-Key": key})
            assert r.status == 403, r
            time.sleep(0.2)
            lines = self.log_text().splitlines()
            # one request each from these two: one line each, not two
            for client in ("10.20.0.3", "10.20.0.5"):
                n = len([l for l in lines if "client: %s," % client in l])
                assert n == 1, "%d lines for one request from %s:\n%s" % (
                    n, client, "\n".join(lines[-20:]))

            def line_of(client, what):
                found = [l for l in lines if "client: %s," % client in l]
                assert found, "no line for %s in:\n%s" % (
                    client, "\n".join(lines[-20:]))
                return found[-1]
            l = line_of(ip, "ip")
            assert "[error]" in l and "ase: block: deny_list, status 403" in l \
                and 'api: "shop"' in l and "source: manual" in l \
                and "identifier: ip" in l, l
            l = line_of("10.20.0.2", "api key")
            assert "identifier: api_key" in l and key not in l \
                and "request:" not in l and "page=" not in l, l
            l = line_of("10.20.0.3", "decoy")
            assert "ase: respond: decoy, status 200" in l, l
            assert not [l for l in lines if "client: 10.20.0.4," in l], \
                "an allowed request is not logged"
        finally:
            self.cli("delete_blacklist", "ip", ip)
            self.cli("delete_blacklist", "api_key", "X-API-Key", key)

    def test_intercept_errors(self):
        """With ase_intercept_errors on, error_page answers ase's blocks and
        pattern errors; a decoy keeps its own answer; a status without an
        error_page keeps ase's; ase_log_level sets the line's level."""
        d = tempfile.mkdtemp(dir=self.tmp)
        conf = d + "/conf"
        shutil.copytree(self.conf_dir, conf,
                        ignore=shutil.ignore_patterns("state"))
        n = Nginx(self.args, d, conf, name="intercept", extra_server="""
        ase_intercept_errors on;
        ase_log_level warn;
        error_page 403 /blocked.html;
        location = /blocked.html { internal; }""")
        self.others.append(n)
        with open(os.path.join(n.prefix, "html", "blocked.html"), "w") as f:
            f.write("our own blocked page\n")
        n.start()
        ip = "10.21.0.1"
        c = http.client.HTTPConnection("127.0.0.1", n.port, timeout=5)
        r = n.request("GET", "/shop/admin", ip=ip, conn=c)
        assert r.status == 200 and r.body == '{"admin": "welcome"}', r
        r = n.request("GET", "/shop/items", ip=ip, conn=c)
        c.close()
        assert r.status == 403 and r.body == "our own blocked page\n", r
        assert r.verdict == "block:deny_list", r
        # 400 has no error_page here: ase's own answer
        r = n.request("PATCH", "/shop/items", ip="10.21.0.2")
        assert r.status == 400 \
            and r.body == "Error: request does not match the shop API", r
        time.sleep(0.2)
        log = open(n.error_log, errors="replace").read()
        l = [x for x in log.splitlines() if "client: %s," % ip in x]
        assert l and "[warn]" in l[-1] and "deny_list" in l[-1], log[-2000:]
        n.stop()
        self.others.remove(n)

    def test_metrics_survive_reload(self):
        """Counters are kept in the shared zone across reloads, as
        stub_status's are; the page is clean Prometheus text."""
        n, conf = self.own_nginx("metrics")
        for i in range(30):
            n.request("GET", "/shop/items", ip="10.22.0.%d" % (i + 1))
        n.request("GET", "/shop/admin", ip="10.22.1.1")
        n.request("PATCH", "/shop/items", ip="10.22.1.2")
        m = self.wait_metrics(
            n, lambda m: m['ase_api_requests_total{api="shop",outcome="allowed"}']
            >= 30, what="counted")
        # ABS sync counts are the polling process's own (it restarts)
        counters = {k: v for k, v in m.items()
                    if k.split("{")[0].endswith("_total")
                    and not k.startswith("ase_abs_sync")}
        n.reload()
        after = self.metrics_of(n)
        fell = {k: (v, after.get(k)) for k, v in counters.items()
                if after.get(k, -1) < v}
        assert not fell, "counters fell at the reload: %r" % fell
        assert after["ase_requests_checked_total"] >= 32, after
        assert after['ase_deny_list_matches_total{source="decoy"}'] == 0, after
        n.request("GET", "/shop/items", ip="10.22.1.1")
        after = self.wait_metrics(
            n, lambda m: m['ase_deny_list_matches_total{source="decoy"}'] >= 1,
            what="a decoy's client blocked")
        assert after['ase_requests_blocked_total{reason="method"}'] >= 1, after
        page = n.request("GET", "/ase_status").body
        print("    exposition checked%s" % (
            " (and by promtool)" if check_exposition(page)
            else " (promtool not installed)"))
        n.stop()
        self.others.remove(n)

    def test_store_unreadable(self):
        """Workers that cannot open the store (a state_dir that root made
        0700 before nginx started) say so at [alert] with the path and the
        reason, and again while it lasts; decoys and API patterns keep
        answering, fail_mode decides the rest and ase_status counts it;
        ase-cli status says why no engine shows.  Given the directory but
        not the store file, the workers register and say they cannot read
        it: ase-cli refuses to report a change as made.  Once the files are
        the workers' user's they load the store, without a reload."""
        if os.geteuid() != 0:
            raise Skip("needs root: workers under another user than the "
                       "master's")
        self.need_cli()
        d = tempfile.mkdtemp(dir=self.tmp)
        os.chmod(self.tmp, 0o755)
        os.chmod(d, 0o755)
        conf = d + "/conf"
        shutil.copytree(self.conf_dir, conf,
                        ignore=shutil.ignore_patterns("state"))
        os.chmod(conf, 0o755)
        # root's ase-cli makes the state first: 0700, root's
        self.cli("add_blacklist", "ip", "10.23.9.9", conf_dir=conf)
        state = conf + "/state"
        assert os.stat(state).st_uid == 0 \
            and os.stat(state).st_mode & 0o077 == 0
        n = Nginx(self.args, d, conf, name="nostore", user="nobody nogroup")
        self.others.append(n)
        n.start()
        r = n.request("GET", "/shop/items", ip="10.23.0.1")
        assert r.status == 200 and r.verdict == "allow:fail_mode", r
        r = n.request("GET", "/shop/items", ip="10.23.9.9")
        assert r.verdict == "allow:fail_mode", ("the list is unknown", r)
        r = n.request("GET", "/shop/admin", ip="10.23.0.2")
        assert r.status == 200 and r.verdict == "respond:decoy", r
        r = n.request("PATCH", "/shop/items", ip="10.23.0.3")
        assert r.status == 400 and r.verdict == "respond:method", r
        # a change now is stored, but no worker can see it: a warning
        # naming the directory, its owner and mode; exit status 0 (whether
        # these workers use this state_dir cannot be known from ase-cli)
        r = subprocess.run([self.cli_bin, "--config", conf + "/ase.conf",
                            "-u", "admin", "-p", "admin",
                            "add_blacklist", "ip", "10.23.7.7"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == \
            "ip 10.23.7.7 added to blacklist\n" \
            and "warning: no running engine has registered" in r.stderr \
            and "nginx runs as uid" in r.stderr \
            and "%s is root's with mode 0700" % state in r.stderr, r
        time.sleep(1.2)
        log = open(n.error_log, errors="replace").read()
        alerts = [l for l in log.splitlines()
                  if "[alert]" in l and "state store" in l]
        assert alerts and state in alerts[0] \
            and ("Permission denied" in alerts[0] or "0700" in alerts[0]) \
            and "fail_mode open" in alerts[0], log[-3000:]
        m = self.metrics_of(n)
        assert m["ase_store_up"] == 0, m
        assert m['ase_requests_allowed_total{reason="fail_mode"}'] >= 2, m
        assert m['ase_requests_blocked_total{reason="decoy"}'] >= 1, m
        st = self.status_lines(self.cli("status", conf_dir=conf))
        assert "root's with mode 0700" in st["running engines"], st
        # the directory given to the workers' user, the store file still
        # root's: the workers register, their records say they cannot read
        # the store, and ase-cli does not call a change made
        shutil.chown(state, "nobody", "nogroup")
        t0 = time.monotonic()
        while True:
            st = self.status_lines(self.cli("status", conf_dir=conf))
            if st["running engines"] == "%d (%d cannot read the state store)" \
                    % (WORKERS, WORKERS):
                break
            assert time.monotonic() - t0 < 5, st
            time.sleep(0.2)
        r = subprocess.run([self.cli_bin, "--config", conf + "/ase.conf",
                            "-u", "admin", "-p", "admin", "--wait", "0s",
                            "add_blacklist", "ip", "10.23.8.8"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and r.stdout == \
            "ip 10.23.8.8 added to blacklist\n" \
            and "the change is stored, but %d of %d running engines cannot " \
            "read the state store" % (WORKERS, WORKERS) in r.stderr, r
        # fixed: the workers' user gets the files too; no reload
        subprocess.run(["chown", "-R", "nobody:nogroup", state], check=True)
        self.converge(lambda: n.request("GET", "/shop/items", ip="10.23.9.9"),
                      403, within=8, what="the store read once fixed")
        # said once it has answered for 5 s
        t0 = time.monotonic()
        while True:
            log = open(n.error_log, errors="replace").read()
            if log.count("the state store answers again") >= WORKERS:
                break
            assert time.monotonic() - t0 < 10, log[-2000:]
            time.sleep(0.1)
        n.stop()
        self.others.remove(n)

    def own_nginx(self, name):
        """A started nginx of its own, on a copy of the configuration with
        its own state_dir (its alerts stay out of the suite's error.log):
        (nginx, conf_dir)."""
        d = tempfile.mkdtemp(dir=self.tmp)
        conf = d + "/conf"
        shutil.copytree(self.conf_dir, conf,
                        ignore=shutil.ignore_patterns("state"))
        n = Nginx(self.args, d, conf, name=name)
        self.others.append(n)
        n.start()
        return n, conf

    def wait_metrics(self, nginx, ok, within=10.0, what=""):
        """Polls ase_status until `ok(metrics)`; returns them."""
        t0 = time.monotonic()
        while True:
            m = self.metrics_of(nginx)
            if ok(m):
                return m
            if time.monotonic() - t0 > within:
                raise AssertionError("%s: not within %.0f s: %r"
                                     % (what, within, m))
            time.sleep(0.1)

    def first_answers(self, send, within=5.0):
        """The first answer of every worker to `send` (new connections)."""
        seen = {}
        t0 = time.monotonic()
        while len(seen) < WORKERS:
            r = send()
            seen.setdefault(r.worker, r)
            assert time.monotonic() - t0 < within, "workers seen: %s" % seen
        return seen

    def test_one_copy_per_host(self):
        """Every worker maps the host's one lists snapshot; only the worker
        holding the host role runs threads of ase; a CLI change is in force
        on every worker when the CLI returns; a detection is listed by the
        time its response is sent; a reload maps the snapshot that is
        there instead of building one."""
        self.need_cli()
        n = self.nginx
        snap = os.path.join(self.conf_dir, "state", "lists.snap")
        self.wait_metrics(
            n, lambda m: m["ase_host_role"] == 1
            and m["ase_snapshot_log_position"] > 0, what="snapshot in use")
        threads = sorted(proc_status(p, "Threads") for p in n.workers())
        assert threads[:-1] == [1] * (WORKERS - 1), threads
        # the host-role worker: the host thread, and the ABS poller and
        # traffic shipper it runs for the host
        assert 2 <= threads[-1] <= 4, threads

        ip = "10.20.0.1"
        self.cli("add_blacklist", "ip", ip)
        first = self.first_answers(lambda: self.get("/shop/items", ip=ip))
        assert all(r.status == 403 for r in first.values()), \
            "not in force on every worker when the CLI returned: %s" % first

        dip = "10.20.0.2"
        r = self.get("/shop/admin", ip=dip)
        assert r.verdict == "respond:decoy", r
        t0 = time.monotonic()
        while dip not in self.cli("view_blacklist", "decoy"):
            assert time.monotonic() - t0 < 2.0, "detection not listed"
            time.sleep(0.05)

        ino = os.stat(snap).st_ino
        n.reload()
        self.wait_metrics(
            n, lambda m: m["ase_host_role"] == 1
            and m["ase_snapshot_log_position"] > 0, what="after reload")
        assert os.stat(snap).st_ino == ino, "the reload rebuilt the snapshot"
        first = self.first_answers(lambda: self.get("/shop/items", ip=ip))
        assert all(r.status == 403 for r in first.values()), first
        self.cli("delete_blacklist", "ip", ip)
        self.cli("delete_blacklist", "ip", dip)

    def test_snapshot_refused_and_rebuilt(self):
        """A damaged snapshot file is refused by the workers, counted in
        ase_status and logged at alert; the host-role worker builds it
        again; the lists stay in force throughout."""
        self.need_cli()
        n, conf = self.own_nginx("snapdamage")
        snap = conf + "/state/lists.snap"
        self.wait_metrics(n, lambda m: m["ase_snapshot_log_position"] > 0,
                          what="snapshot in use")
        ip = "10.21.0.1"
        self.cli("add_blacklist", "ip", ip, conf_dir=conf)
        send = lambda: n.request("GET", "/shop/items", ip=ip)
        assert all(x.status == 403 for x in self.first_answers(send).values())
        before = self.metrics_of(n)["ase_snapshot_refusals_total"]
        data = bytearray(open(snap, "rb").read())
        data[len(data) // 2] ^= 0x40
        with open(snap + ".bad", "wb") as f:
            f.write(data)
        os.rename(snap + ".bad", snap)
        bad_ino = os.stat(snap).st_ino
        self.wait_metrics(
            n, lambda m: m["ase_snapshot_refusals_total"] > before,
            what="refused")
        t0 = time.monotonic()
        while os.stat(snap).st_ino == bad_ino:
            assert send().status == 403, "still enforced"
            assert time.monotonic() - t0 < 10, "not rebuilt"
            time.sleep(0.05)
        self.wait_metrics(n, lambda m: m["ase_snapshot_refused"] == 0,
                          what="the rebuilt one in use")
        assert all(x.status == 403 for x in self.first_answers(send).values())
        time.sleep(1.2)  # every worker has published (and logged)
        log = open(n.error_log, errors="replace").read()
        alerts = [l for l in log.splitlines()
                  if "[alert]" in l and "lists.snap" in l]
        assert alerts and "refused" in alerts[0], log[-2000:]

    def test_host_role_worker_killed(self):
        """kill -9 of the worker holding the host role (building snapshots)
        leaves every worker enforcing, and another worker takes the role
        within 2 s."""
        self.need_cli()
        n, conf = self.own_nginx("hostkill")
        self.wait_metrics(n, lambda m: m["ase_host_role"] == 1
                          and m["ase_snapshot_log_position"] > 0,
                          what="snapshot in use")
        ip = "10.22.0.1"
        self.cli("add_blacklist", "ip", ip, conf_dir=conf)
        send = lambda: n.request("GET", "/shop/items", ip=ip)
        host = [p for p in n.workers() if proc_status(p, "Threads") > 1]
        assert len(host) == 1, host
        os.kill(host[0], signal.SIGKILL)
        t0 = time.monotonic()
        taken = None
        while time.monotonic() - t0 < 5:
            r = send()
            assert r.status == 403, "not enforced after the kill: %r" % r
            now = [p for p in n.workers()
                   if p != host[0] and proc_status(p, "Threads") > 1]
            if now:
                taken = time.monotonic() - t0
                break
            time.sleep(0.02)
        assert taken is not None and taken <= 2.0, \
            "role not taken within 2 s (%s)" % taken
        assert all(x.status == 403 for x in self.first_answers(send).values())
        print("    host role taken %.2f s after kill -9 of its worker"
              % taken)

    def test_worker_without_engine(self):
        """A worker that cannot build its engine keeps serving: fail_mode
        decides (open: allowed, closed: 403), error.log says why at
        [alert], ase_status counts it, and the worker builds its engine
        once the cause is gone, without a reload.  The cause here is an
        API file that the master (root) reads and the workers' user
        cannot."""
        if os.geteuid() != 0:
            raise Skip("needs root: workers under another user than the "
                       "master's")
        d = tempfile.mkdtemp(dir=self.tmp)
        os.chmod(self.tmp, 0o755)
        os.chmod(d, 0o755)
        conf = d + "/conf"
        shutil.copytree(self.conf_dir, conf,
                        ignore=shutil.ignore_patterns("state"))
        os.makedirs(conf + "/state")
        shutil.chown(conf + "/state", "nobody")
        api = conf + "/api/shop.json"
        os.chmod(api, 0o600)
        n = Nginx(self.args, d, conf, name="noengine", user="nobody nogroup")
        self.others.append(n)
        n.start()

        def on_every_worker(path, status, verdict, within=2.0):
            self.converge(lambda: n.request("GET", path, ip="10.13.0.1"),
                          status, within=within, what=path)
            r = n.request("GET", path, ip="10.13.0.1")
            assert r.status == status and r.verdict == verdict, r
            return r

        # fail_mode=open: allowed, decoys included
        r = on_every_worker("/shop/items", 200, "allow:fail_mode")
        assert r.body == OK_BODY, r
        on_every_worker("/wp-admin/", 200, "allow:fail_mode")
        log = open(n.error_log, errors="replace").read()
        alerts = [l for l in log.splitlines() if "[alert]" in l]
        assert alerts and "shop.json" in alerts[0] \
            and "Permission denied" in alerts[0] \
            and "fail_mode open" in alerts[0], log[-2000:]
        time.sleep(1.2)  # every worker has published
        m = self.metrics_of(n)
        assert m["ase_workers_without_engine"] == WORKERS, m
        assert m["ase_fail_mode_active"] == WORKERS, m
        assert m["ase_requests_without_engine_total"] >= 2 * 21, m
        assert m["ase_requests_checked_total"] \
            >= m["ase_requests_without_engine_total"], m

        # fail_mode=closed: 403, as an engine that cannot load its state
        with open(conf + "/ase.conf") as f:
            text = f.read()
        with open(conf + "/ase.conf", "w") as f:
            f.write(re.sub(r"(?m)^fail_mode=.*$", "fail_mode=closed", text))
        n.reload()
        r = on_every_worker("/shop/items", 403, "block:fail_mode")
        assert r.body == UNAUTHORIZED, r
        time.sleep(1.2)
        m = self.metrics_of(n)
        assert m['ase_requests_blocked_total{reason="fail_mode"}'] >= 21, m
        pids = n.workers()
        assert not re.search(r"exited with fatal code|exited on signal",
                             open(n.error_log).read()), "a worker exited"

        # the cause removed: each worker builds its engine at its next retry
        os.chmod(api, 0o644)
        on_every_worker("/shop/items", 200, "allow", within=12)
        on_every_worker("/wp-admin/", 404, "respond:decoy")
        assert n.workers() == pids, "workers were replaced"
        log = open(n.error_log, errors="replace").read()
        assert log.count("engine built after") >= WORKERS, log[-2000:]
        time.sleep(1.2)
        m = self.metrics_of(n)
        assert m["ase_workers_without_engine"] == 0, m
        assert m["ase_fail_mode_active"] == 0, m
        n.stop()
        self.others.remove(n)

    def test_worker_processes_auto(self):
        n = Nginx(self.args, self.tmp, self.conf_dir, name="auto",
                  workers="auto")
        self.others.append(n)
        r = subprocess.run(n.cmd(), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        n.master = int(open(os.path.join(n.prefix, "nginx.pid")).read())
        t0 = time.monotonic()
        while True:
            try:
                resp = n.request("GET", "/wp-admin/", ip="10.7.0.1")
                break
            except OSError:
                assert time.monotonic() - t0 < 5, "auto: no answer"
                time.sleep(0.05)
        assert resp.status == 404 and resp.verdict == "respond:decoy", resp
        n.stop()
        self.others.remove(n)
        log = open(n.error_log, errors="replace").read()
        assert not re.search(r"\[(alert|emerg|crit)\]", log), log

    def test_valgrind_single_process(self):
        """nginx with master_process off under valgrind: the engine is made
        and freed in the one process, no invalid access, no leak of ours."""
        vg = shutil.which("valgrind")
        if not vg:
            raise Skip("valgrind is not installed")
        d = os.path.join(self.tmp, "valgrind")
        os.makedirs(d + "/tmp")
        port = free_port()
        with open(d + "/ok.txt", "w") as f:
            f.write(OK_BODY)
        with open(d + "/nginx.conf", "w") as f:
            f.write(f"""
load_module {self.args.module};
master_process off;
daemon off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    ase_config {self.conf_dir}/ase.conf;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    server {{
        listen 127.0.0.1:{port};
        root {d};
        ase on;
        location / {{ try_files /ok.txt =404; }}
        location = /s {{ ase off; ase_status; }}
    }}
}}
""")
        log = d + "/valgrind.log"
        p = subprocess.Popen([vg, "--leak-check=full", "--log-file=" + log,
                              self.args.nginx, "-p", d + "/", "-c",
                              d + "/nginx.conf"])
        try:
            t0 = time.monotonic()
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    assert time.monotonic() - t0 < 60, "valgrind nginx: no listener"
                    assert p.poll() is None, "valgrind nginx exited"
                    time.sleep(0.2)
            seen = []
            for path, ip in [("/shop/items", "10.12.0.1"), ("/shop/admin", "10.12.0.2"),
                             ("/shop/items", "10.12.0.2"), ("/secure/x", "10.12.0.3"),
                             ("/tls/x", "10.12.0.4"), ("/s", None)]:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", path, headers={"X-Forwarded-For": ip} if ip else {})
                r = c.getresponse()
                r.read()
                c.close()
                seen.append(r.status)
            assert seen == [200, 200, 403, 301, 403, 200], seen
            os.kill(int(open(d + "/nginx.pid").read()), signal.SIGQUIT)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        text = open(log).read()
        assert "Invalid read" not in text and "Invalid write" not in text \
            and "uninitialised" not in text, text[-3000:]
        ours = [rec for rec in text.split("\n==" + text.split("==")[1] + "== \n")
                if re.search(r"(definitely|indirectly) lost in loss record", rec)
                and re.search(r"ngx_http_ase|ase::|libase|/src/.*\.rs", rec)]
        assert not ours, "\n".join(ours)[:3000]

    # -- tests with ase-cli / ase-abs-ref ------------------------------------

    KINDS = [
        # name, ase-cli identifier words, request
        ("ip", ["ip", "10.9.0.1"],
         dict(path="/shop/items", ip="10.9.0.1")),
        ("cidr", ["ip", "10.9.1.0/24"],
         dict(path="/shop/items", ip="10.9.1.77")),
        ("cookie", ["cookie", "JSESSIONID", "sess-e2e-1"],
         dict(path="/shop/items", ip="10.9.2.1",
              headers={"Cookie": "theme=dark; JSESSIONID=sess-e2e-1"})),
        ("token", ["token", "tok-e2e-1"],
         dict(path="/shop/items", ip="10.9.3.1",
              headers={"Authorization": "Bearer tok-e2e-1"})),
        ("api_key header", ["api_key", "X-API-Key", "key-e2e-1"],
         dict(path="/shop/items", ip="10.9.4.1",
              headers={"x-api-key": "key-e2e-1"})),
        ("api_key query", ["api_key", "key", "qs-e2e-1"],
         dict(path="/partner/orders?page=2&key=qs-e2e-1", ip="10.9.5.1")),
        ("username header", ["username", "alice-e2e"],
         dict(path="/shop/items", ip="10.9.6.1",
              headers={"X-User": "alice-e2e"})),
        ("username jwt", ["username", "bob-e2e"],
         dict(path="/account/me", ip="10.9.7.1",
              headers={"Authorization": "Bearer " + jwt(
                  {"username": "bob-e2e", "client_id": "c1"})})),
    ]
    SECRETS = ["sess-e2e-1", "tok-e2e-1", "key-e2e-1", "qs-e2e-1"]

    def test_identifier_kinds(self):
        self.need_cli()
        for name, words, rq in self.KINDS:
            path = rq["path"]
            kw = {k: v for k, v in rq.items() if k != "path"}

            def send():
                return self.get(path, **kw)
            r = send()
            assert r.status == 200 and r.body == OK_BODY, (name, r)
            self.cli("add_blacklist", *words)
            took = self.converge(send, 403, what=name + " add_blacklist")
            r = send()
            assert r.body == UNAUTHORIZED and r.verdict == "block:deny_list", (name, r)
            self.cli("add_whitelist", *words)
            self.converge(send, 200, what=name + " add_whitelist")
            assert send().verdict == "allow:allow_list", name
            self.cli("delete_whitelist", *words)
            self.cli("delete_blacklist", *words)
            self.converge(send, 200, what=name + " deleted")
            print("    %-16s blocked on every worker in %.0f ms" % (name, took * 1000))

    def test_detections_listed_and_disabled(self):
        self.need_cli()
        cases = [
            ("decoy", "10.10.0.1",
             lambda ip: self.get("/shop/admin", ip=ip), 200),
            ("invalid_method", "10.10.0.2",
             lambda ip: self.nginx.request("PATCH", "/shop/items", ip=ip), 400),
            ("invalid_content_type", "10.10.0.3",
             lambda ip: self.nginx.request("POST", "/shop/items", ip=ip, body="a=b",
                                           headers={"Content-Type": "text/plain"}), 400),
            ("invalid_protocol", "10.10.0.4",
             lambda ip: self.get("/tls/x", ip=ip), 403),
        ]
        for source, ip, trigger, status in cases:
            r = trigger(ip)
            assert r.status == status, (source, r)
            self.converge(lambda: self.get("/shop/items", ip=ip), 403,
                          what=source + " detection")
            out = self.cli("view_blacklist", source)
            assert ip in out, (source, out)
        self.cli("disable_ase_detected_attack")
        try:
            for source, ip, _, _ in cases:
                self.converge(lambda: self.get("/shop/items", ip=ip), 200,
                              what=source + " after disable_ase_detected_attack")
            r = self.get("/shop/admin", ip="10.10.0.5")
            assert r.status == 200, r
            r = self.get("/shop/items", ip="10.10.0.5")
            assert r.status == 200, ("no detection while disabled", r)
        finally:
            self.cli("enable_ase_detected_attack")

    def test_abs_attack_list(self):
        self.need_abs()
        with open(self.attacklist, "w") as f:
            json.dump({"ips": ["10.11.0.1"],
                       "cookies": {"JSESSIONID": ["abs-cookie-1"]},
                       "oauth_tokens": ["abs-token-1"],
                       "api_keys": ["abs-key-1"],
                       "usernames": ["abs-user-1"]}, f)
        reqs = [
            dict(ip="10.11.0.1"),
            dict(ip="10.11.0.2", headers={"Cookie": "JSESSIONID=abs-cookie-1"}),
            dict(ip="10.11.0.3", headers={"Authorization": "Bearer abs-token-1"}),
            dict(ip="10.11.0.4", headers={"X-API-Key": "abs-key-1"}),
            dict(ip="10.11.0.5", headers={"X-User": "abs-user-1"}),
        ]
        for kw in reqs:
            self.converge(lambda: self.get("/shop/items", **kw), 403, within=10,
                          what="ABS-listed %s" % kw)
        out = self.cli("view_blacklist", "abs_detected")
        assert "10.11.0.1" in out, out
        self.cli("disable_abs_attack")
        try:
            self.converge(lambda: self.get("/shop/items", ip="10.11.0.1"), 200,
                          what="ABS entries after disable_abs_attack")
        finally:
            self.cli("enable_abs_attack")

    def test_large_abs_list(self):
        """A 1.12M-entry ABS list (1M IPv4, 100k OAuth tokens of 40 bytes,
        20k cookies) within the default attack_list_memory (128MB): nothing
        dropped, and the token listed last (the list's last entry: the one
        dropped first were the budget short) blocks on every worker. The
        list before it is served again afterwards."""
        self.need_abs()
        n_ips, n_tok, n_ck = 1000000, 100000, 20000
        ips = ["10.%d.%d.%d" % (100 + (i >> 16), i >> 8 & 255, i & 255)
               for i in range(n_ips)]
        toks = ["e2e-tok-%032x" % (i * 0x9E3779B97F4A7C15 % (1 << 128))
                for i in range(n_tok)]
        cks = ["e2e-ck-%025x" % (i * 0xC2B2AE3D27D4EB4F % (1 << 100))
               for i in range(n_ck)]
        with open(self.attacklist) as f:
            before = f.read()
        tmp = self.attacklist + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"ips": ips, "cookies": {"JSESSIONID": cks},
                       "oauth_tokens": toks}, f)
        last_cookie = cks[-1]
        del ips, cks
        t0 = time.monotonic()
        os.replace(tmp, self.attacklist)
        last = {"Authorization": "Bearer " + toks[-1]}
        try:
            took = self.converge(
                lambda: self.get("/shop/items", ip="10.12.0.1", headers=last),
                403, within=90, what="the last token of a 1.12M list")
            m = self.wait_metrics(
                self.nginx, lambda m: m["ase_abs_entries"] == n_ips + n_tok + n_ck
                and m["ase_snapshot_log_position"] > 0,
                what="ase_status shows the whole list")
            assert m["ase_abs_dropped_items"] == 0, m
            assert self.get("/shop/items", ip="10.12.0.1").status == 200
            r = self.get("/shop/items", ip="10.12.0.1",
                         headers={"Cookie": "JSESSIONID=" + last_cookie})
            assert r.status == 403, r
            print("    list served -> every worker blocks: %.1f s; overlay %d"
                  % (time.monotonic() - t0, m["ase_overlay_entries"]))
            assert took <= 90
        finally:
            with open(tmp, "w") as f:
                f.write(before)
            os.replace(tmp, self.attacklist)
            self.converge(
                lambda: self.get("/shop/items", ip="10.12.0.1", headers=last),
                200, within=90, what="the list before, served again")

    def test_abs_traffic(self):
        """Each checked request reaches ABS as a record carrying the status
        nginx answered with, from every worker."""
        self.need_abs()
        # an ABS-listed user name (test_abs_attack_list's list), blocking
        # on every worker before the records that count are made
        user = {"X-User": "abs-user-1"}
        self.converge(lambda: self.get("/shop/items", ip="10.12.0.5",
                                       headers=user), 403, within=5,
                      what="ABS-listed user name")
        # a pattern violation lists its client: sent once
        sent = [
            ("10.12.0.1", lambda: self.get("/shop/items", ip="10.12.0.1"),
             200, "allow", 3),
            ("10.12.0.2", lambda: self.nginx.request("PATCH", "/shop/items",
                                                     ip="10.12.0.2"),
             400, "respond", 1),
            ("10.12.0.4", lambda: self.get("/shop/items", ip="10.12.0.4",
                                           headers=user),
             403, "block", 3),
        ]
        workers = set()
        for ip, send, status, _, n in sent:
            for _ in range(n):
                r = send()
                assert r.status == status, (ip, r)
                workers.add(r.worker)
        r = self.get("/open/x", ip="10.12.0.3")  # ase off: not reported
        assert r.status == 200, r
        # without X-Forwarded-For the record has the connection's own port
        conn = http.client.HTTPConnection("127.0.0.1", self.nginx.port,
                                          timeout=5)
        conn.connect()
        own_port = conn.sock.getsockname()[1]
        r = self.nginx.request("GET", "/shop/items", conn=conn)
        conn.close()
        assert r.status == 200, r
        deadline = time.monotonic() + 10
        while True:
            recs = self.traffic_records()
            got = {ip: [x for x in recs if x["client_ip"] == ip]
                   for ip, _, _, _, _ in sent}
            own = [x for x in recs if x["client_ip"] == "127.0.0.1"
                   and x["client_port"] == own_port]
            if own and all(len(got[ip]) >= n for ip, _, _, _, n in sent):
                break
            assert time.monotonic() < deadline, \
                "records within 10 s: %r" % {k: len(v) for k, v in got.items()}
            time.sleep(0.2)
        for ip, _, status, verdict, n in sent:
            for x in got[ip][-n:]:
                assert x["response_code"] == status, (ip, x)
                assert x["verdict"] == verdict, (ip, x)
                assert x["method"] in ("GET", "PATCH") and x["host"], x
        assert got["10.12.0.1"][-1]["api_name"] == "shop"
        assert got["10.12.0.2"][-1]["reason"] == "invalid_method"
        assert got["10.12.0.4"][-1]["reason"] == "deny_list"
        assert got["10.12.0.4"][-1]["username"] == "abs-user-1"
        assert not [x for x in recs if x["client_ip"] == "10.12.0.3"]
        print("    client ports: %d from the connection; %r with X-Forwarded-For"
              % (own_port, sorted({x["client_port"] for x in got["10.12.0.1"]})))
        print("    records from %d workers, response codes 200/400/403"
              % len(workers))

    def test_abs_status(self):
        """ase_status and ase-cli status show the ABS sync; a failing ABS
        shows as failures while the list in force stays."""
        self.need_abs()
        time.sleep(1.2)  # every worker has published
        m = self.metrics()
        assert m["ase_abs_configured"] == 1, m
        assert m["ase_abs_leader"] == 1, ("one worker polls", m)
        st = self.status_lines(self.cli("status"))
        entries = int(st["abs entries"])  # test_abs_attack_list's list
        assert entries >= 5 and int(st["abs blacklist"]) == entries, st
        assert m["ase_abs_entries"] == entries, m
        assert m["ase_abs_dropped_items"] == 0, m
        assert time.time() - m["ase_abs_last_success_timestamp_seconds"] < 30, m
        assert m["ase_abs_consecutive_failures"] == 0, m
        assert m["ase_abs_traffic_sent_total"] > 0, m
        assert m["ase_abs_traffic_dropped_total"] == 0, m
        assert m["ase_store_up"] == 1 and m["ase_fail_mode_active"] == 0, m
        pids = {str(p) for p in self.nginx.workers()}
        assert st["abs leader"].startswith("pid "), st
        assert st["abs leader"][4:] in pids, (st["abs leader"], pids)
        assert st["abs last error"] == "none", st
        failures = m["ase_abs_sync_failures_total"]
        self.abs_control("500")
        try:
            deadline = time.monotonic() + 10
            while True:
                time.sleep(0.5)
                m = self.metrics()
                if m["ase_abs_consecutive_failures"] >= 1:
                    break
                assert time.monotonic() < deadline, m
            assert m["ase_abs_sync_failures_total"] > failures, m
            assert m["ase_abs_entries"] == entries, ("the list in force", m)
            st = self.status_lines(self.cli("status"))
            assert "500" in st["abs last error"], st
            r = self.get("/shop/items", ip="10.11.0.1")
            assert r.status == 403, ("still blocked", r)
        finally:
            self.abs_control("ok")
        out = self.cli("sync_abs")
        assert out.startswith("ABS attack list synced: %d entries" % entries), \
            out
        time.sleep(1.2)
        m = self.metrics()
        assert m["ase_abs_consecutive_failures"] == 0, m

    # -- runner --------------------------------------------------------------

    ORDER = [
        "test_config_errors", "test_allow", "test_unknown_api",
        "test_decoy_in_context", "test_decoy_out_of_context",
        "test_pattern_method", "test_pattern_content_type",
        "test_pattern_protocol", "test_redirect", "test_monitor_mode",
        "test_status", "test_identifier_kinds", "test_block_traced",
        "test_intercept_errors", "test_metrics_survive_reload",
        "test_store_unreadable",
        "test_detections_listed_and_disabled", "test_abs_attack_list",
        "test_abs_traffic", "test_abs_status", "test_one_copy_per_host",
        "test_snapshot_refused_and_rebuilt", "test_host_role_worker_killed",
        "test_large_abs_list",
        "test_reload", "test_reload_soak", "test_worker_without_engine",
        "test_worker_processes_auto",
        "test_valgrind_single_process",
    ]

    def run(self, only):
        results = []
        try:
            self.nginx.start()
            for name in self.ORDER:
                if only and not any(o in name for o in only):
                    continue
                t0 = time.monotonic()
                try:
                    getattr(self, name)()
                    results.append((name, "PASS", ""))
                except Skip as e:
                    results.append((name, "SKIP", str(e)))
                except Exception as e:
                    detail = "".join(traceback.format_exception_only(type(e), e))
                    if not isinstance(e, AssertionError):
                        detail = traceback.format_exc()
                    results.append((name, "FAIL", detail.strip()))
                status, detail = results[-1][1], results[-1][2]
                print("%-4s %-40s %5.2fs %s" % (status, name, time.monotonic() - t0,
                                               detail[:2000]), flush=True)
        finally:
            for n in self.others:
                try:
                    n.stop()
                except Exception:
                    pass
            self.nginx.stop()
            if self.abs_proc:
                self.abs_proc.terminate()
                self.abs_proc.wait(timeout=10)
        # after shutdown: the logs of the whole run
        log = self.log_text()
        bad = [l for l in log.splitlines()
               if re.search(r"\[(alert|emerg|crit)\]|exited on signal|core dumped|panick",
                            l)]
        results.append(("error log clean", "FAIL" if bad else "PASS",
                        "\n".join(bad[:20])))
        leaked = [s for s in self.SECRETS if s in log]
        results.append(("no secrets in error log", "FAIL" if leaked else "PASS",
                        " ".join(leaked)))
        for r in results[-2:]:
            print("%-4s %-40s %s" % (r[1], r[0], r[2]))
        return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nginx", required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("only", nargs="*")
    args = ap.parse_args()
    suite = Suite(args)
    t0 = time.monotonic()
    try:
        results = suite.run(args.only)
    finally:
        if args.keep:
            print("kept", suite.tmp)
        else:
            shutil.rmtree(suite.tmp, ignore_errors=True)
    n = {s: sum(1 for r in results if r[1] == s) for s in ("PASS", "FAIL", "SKIP")}
    print("nginx e2e: %d passed, %d failed, %d skipped in %.1fs"
          % (n["PASS"], n["FAIL"], n["SKIP"], time.monotonic() - t0))
    strict = os.environ.get("ASE_E2E_STRICT") == "1"
    sys.exit(1 if n["FAIL"] or (strict and n["SKIP"]) else 0)


if __name__ == "__main__":
    main()
