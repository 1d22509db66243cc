#!/usr/bin/env python3
"""Drive the real legacy Python Nacos client (nacos-sdk-python 0.1.x) against a nacre server.

Usage:
    check_legacy.py --servers 127.0.0.1:8848 [--dead-server 127.0.0.1:1] [--only a,b] [--list]
                    [--username U --password P]

Prints one line per check, ``PASS name`` or ``FAIL name: reason``, then a summary line
``python-legacy: N passed, M failed`` and exits non-zero if any check failed.

Every scenario uses its own, randomly suffixed service names, so scenarios are independent
and run concurrently (the slow timing scenarios dominate the wall time: about 50 s).

Only public NacosClient methods are used: add_naming_instance, remove_naming_instance,
modify_naming_instance, list_naming_instance, get_naming_instance, send_heartbeat, subscribe.
"""

import argparse
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid

import nacos
from nacos.listener import SubscribeListener

IP = "127.0.0.1"
OUT_LOCK = threading.Lock()
RESULTS = []  # (name, ok, reason)

# Timing contract (reference §6.2): unhealthy 15 s after the last beat, deleted after 30 s;
# the server checks every 5 s. Bounds are generous on purpose.
UNHEALTHY_WITHIN = 25.0
UNHEALTHY_NOT_BEFORE = 10.0
GONE_WITHIN = 45.0
GONE_NOT_BEFORE = 25.0


class CheckFailed(Exception):
    pass


def report(name, ok, reason=""):
    with OUT_LOCK:
        RESULTS.append((name, ok, reason))
        if ok:
            print("PASS %s" % name, flush=True)
        else:
            print("FAIL %s: %s" % (name, reason), flush=True)


def expect(cond, reason):
    if not cond:
        raise CheckFailed(reason)


def check(name, fn, *args):
    """Run one check; a raised exception is a failure with its message."""
    try:
        fn(*args)
        report(name, True)
        return True
    except CheckFailed as e:
        report(name, False, str(e))
    except Exception as e:  # client errors (NacosException, HTTP errors, bad JSON...)
        report(name, False, "%s: %s" % (type(e).__name__, e))
    return False


def uniq(prefix):
    return "py-%s-%s" % (prefix, uuid.uuid4().hex[:8])


PORTS_LOCK = threading.Lock()
NEXT_PORT = [20000 + (os.getpid() % 1000) * 20]


def fake_port():
    """A port number used only as instance data (never contacted by the driver)."""
    with PORTS_LOCK:
        NEXT_PORT[0] += 1
        return NEXT_PORT[0]


def free_port():
    s = socket.socket()
    s.bind((IP, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Ctx:
    def __init__(self, servers, dead, log_dir, endpoint=None, username=None, password=None):
        self.servers = servers
        self.dead = dead
        self.log_dir = log_dir
        self.endpoint = endpoint
        self.username = username
        self.password = password

    def client(self, namespace=None, servers=None):
        if self.endpoint and not servers:
            # Endpoint mode: the client learns its servers from the address server only.
            # 0.1.x appends "?namespace=<ns>" and fails on None, so name the default one.
            c = nacos.NacosClient(endpoint=self.endpoint, namespace=namespace or "public",
                                  username=self.username, password=self.password,
                                  logDir=self.log_dir)
        else:
            c = nacos.NacosClient(servers or self.servers, namespace=namespace,
                                  username=self.username, password=self.password,
                                  logDir=self.log_dir)
        # Snapshots and failover files go under the driver's temp dir, not the working dir.
        c.set_options(default_timeout=5,
                      snapshot_base=os.path.join(self.log_dir, "snapshot"),
                      failover_base=os.path.join(self.log_dir, "failover"))
        return c


def hosts_of(res):
    expect(isinstance(res, dict), "list response is not a JSON object: %r" % (res,))
    expect("hosts" in res, "list response has no 'hosts': %r" % (res,))
    return res["hosts"]


def find(hosts, port, ip=IP):
    for h in hosts:
        if h.get("ip") == ip and h.get("port") == port:
            return h
    return None


def ports(hosts):
    return sorted(h.get("port") for h in hosts)


# --------------------------------------------------------------------------------------------
# scenarios


def sc_register_fields(ctx):
    c = ctx.client()
    svc = uniq("reg")
    port = fake_port()
    meta = {"version": "1.2.3", "zone": "z-1"}

    def register():
        ok = c.add_naming_instance(svc, IP, port, cluster_name="c-a", weight=2.5, metadata=meta)
        expect(ok is True, "add_naming_instance returned %r (body was not 'ok')" % ok)

    if not check("py.register", register):
        return

    def listed():
        res = c.list_naming_instance(svc)
        hosts = hosts_of(res)
        expect(len(hosts) == 1, "expected 1 host, got %r" % hosts)
        h = hosts[0]
        expect(h.get("ip") == IP, "ip %r" % h.get("ip"))
        expect(h.get("port") == port, "port %r != %r" % (h.get("port"), port))
        expect(float(h.get("weight", -1)) == 2.5, "weight %r != 2.5" % h.get("weight"))
        expect(h.get("metadata") == meta, "metadata %r != %r" % (h.get("metadata"), meta))
        expect(h.get("clusterName") == "c-a", "clusterName %r != 'c-a'" % h.get("clusterName"))
        expect(h.get("healthy") is True, "healthy %r" % h.get("healthy"))
        expect(h.get("valid") is True, "valid %r" % h.get("valid"))
        expect(h.get("enabled") is True, "enabled %r" % h.get("enabled"))
        expect(h.get("ephemeral") is True, "ephemeral %r" % h.get("ephemeral"))
        want_id = "%s#%d#c-a#DEFAULT_GROUP@@%s" % (IP, port, svc)
        expect(h.get("instanceId") == want_id, "instanceId %r != %r" % (h.get("instanceId"), want_id))
        expect(res.get("name") == "DEFAULT_GROUP@@" + svc, "name %r" % res.get("name"))
        # Python's UA is not a Java one: dom (and host serviceName) carry the bare name.
        expect(res.get("dom") == svc, "dom %r != %r (bare name for non-Java UA)" % (res.get("dom"), svc))
        expect(res.get("clusters") == "", "clusters echo %r != ''" % res.get("clusters"))
        expect(isinstance(res.get("cacheMillis"), int), "cacheMillis %r" % res.get("cacheMillis"))

    check("py.register.list_fields", listed)

    def detail():
        d = c.get_naming_instance(svc, IP, port, cluster_name="c-a")
        expect(d.get("ip") == IP and d.get("port") == port, "ip/port %r" % d)
        expect(float(d.get("weight", -1)) == 2.5, "weight %r" % d.get("weight"))
        expect(d.get("metadata") == meta, "metadata %r" % d.get("metadata"))
        expect(d.get("clusterName") == "c-a", "clusterName %r" % d.get("clusterName"))
        expect(d.get("healthy") is True, "healthy %r" % d.get("healthy"))
        expect(d.get("service") == "DEFAULT_GROUP@@" + svc, "service %r" % d.get("service"))

    check("py.register.get_instance", detail)

    def modify():
        ok = c.modify_naming_instance(svc, IP, port, cluster_name="c-a", weight=4.0,
                                      metadata={"version": "2"})
        expect(ok is True, "modify_naming_instance returned %r" % ok)
        h = find(hosts_of(c.list_naming_instance(svc)), port)
        expect(h is not None, "instance vanished after modify")
        expect(float(h.get("weight", -1)) == 4.0, "weight %r != 4.0" % h.get("weight"))
        expect(h.get("metadata") == {"version": "2"}, "metadata %r" % h.get("metadata"))
        expect(h.get("healthy") is True, "healthy %r" % h.get("healthy"))

    check("py.modify", modify)
    c.remove_naming_instance(svc, IP, port, cluster_name="c-a")

    # Python 0.1.x sends clusterName=None (the literal string) when no cluster is given; the
    # server must accept it as a legal cluster name (reference §2).
    svc2 = uniq("nocluster")
    port2 = fake_port()

    def none_cluster():
        ok = c.add_naming_instance(svc2, IP, port2)
        expect(ok is True, "add_naming_instance returned %r" % ok)
        h = find(hosts_of(c.list_naming_instance(svc2)), port2)
        expect(h is not None, "instance not listed")
        expect(h.get("clusterName") == "None", "clusterName %r != 'None'" % h.get("clusterName"))
        ok = c.remove_naming_instance(svc2, IP, port2, cluster_name="None")
        expect(ok is True, "remove returned %r" % ok)
        expect(find(hosts_of(c.list_naming_instance(svc2)), port2) is None, "still listed after remove")

    check("py.register.default_cluster_none", none_cluster)


def sc_healthy_only(ctx):
    c = ctx.client()
    svc = uniq("hon")
    p_ok, p_bad = fake_port(), fake_port()

    def run():
        expect(c.add_naming_instance(svc, IP, p_ok, cluster_name="c1") is True, "register healthy failed")
        expect(c.add_naming_instance(svc, IP, p_bad, cluster_name="c1", healthy=False) is True,
               "register unhealthy failed")
        all_hosts = hosts_of(c.list_naming_instance(svc, healthy_only=False))
        expect(ports(all_hosts) == sorted([p_ok, p_bad]), "healthyOnly=false ports %r" % ports(all_hosts))
        bad = find(all_hosts, p_bad)
        expect(bad.get("healthy") is False, "instance registered healthy=False is listed healthy=%r"
               % bad.get("healthy"))
        expect(find(all_hosts, p_ok).get("healthy") is True, "healthy instance listed unhealthy")
        expect(all_hosts[0].get("port") == p_ok, "healthy hosts must come first: %r" % ports(all_hosts))
        only = hosts_of(c.list_naming_instance(svc, healthy_only=True))
        expect(ports(only) == [p_ok], "healthyOnly=true ports %r != [%d]" % (ports(only), p_ok))

    check("py.list.healthy_only", run)

    # protect threshold 0.0: when nothing is healthy, everything is returned as healthy.
    svc2 = uniq("protect")
    p2 = fake_port()

    def protect():
        expect(c.add_naming_instance(svc2, IP, p2, cluster_name="c1", healthy=False) is True, "register failed")
        only = hosts_of(c.list_naming_instance(svc2, healthy_only=True))
        expect(ports(only) == [p2], "healthyOnly=true with all unhealthy returned %r" % ports(only))
        expect(only[0].get("healthy") is True, "protect-threshold host reported healthy=%r"
               % only[0].get("healthy"))

    check("py.list.protect_threshold", protect)
    for s, p in ((svc, p_ok), (svc, p_bad), (svc2, p2)):
        c.remove_naming_instance(s, IP, p, cluster_name="c1")


def sc_cluster_filter(ctx):
    c = ctx.client()
    svc = uniq("clu")
    pa, pb = fake_port(), fake_port()

    def run():
        expect(c.add_naming_instance(svc, IP, pa, cluster_name="c-a") is True, "register c-a failed")
        expect(c.add_naming_instance(svc, IP, pb, cluster_name="c-b") is True, "register c-b failed")
        res = c.list_naming_instance(svc, clusters="c-a")
        expect(ports(hosts_of(res)) == [pa], "clusters=c-a gave %r" % ports(hosts_of(res)))
        expect(res.get("clusters") == "c-a", "clusters echo %r != 'c-a'" % res.get("clusters"))
        res = c.list_naming_instance(svc, clusters="c-b")
        expect(ports(hosts_of(res)) == [pb], "clusters=c-b gave %r" % ports(hosts_of(res)))
        res = c.list_naming_instance(svc, clusters="c-a,c-b")
        expect(ports(hosts_of(res)) == sorted([pa, pb]), "clusters=c-a,c-b gave %r" % ports(hosts_of(res)))
        res = c.list_naming_instance(svc)
        expect(ports(hosts_of(res)) == sorted([pa, pb]), "no cluster filter gave %r" % ports(hosts_of(res)))

    check("py.list.cluster_filter", run)
    c.remove_naming_instance(svc, IP, pa, cluster_name="c-a")
    c.remove_naming_instance(svc, IP, pb, cluster_name="c-b")


def sc_deregister(ctx):
    c = ctx.client()
    svc = uniq("dereg")
    p1, p2 = fake_port(), fake_port()

    def run():
        expect(c.add_naming_instance(svc, IP, p1, cluster_name="c1") is True, "register 1 failed")
        expect(c.add_naming_instance(svc, IP, p2, cluster_name="c1") is True, "register 2 failed")
        expect(ports(hosts_of(c.list_naming_instance(svc))) == sorted([p1, p2]), "both not listed")
        expect(c.remove_naming_instance(svc, IP, p1, cluster_name="c1") is True, "remove returned not ok")
        left = ports(hosts_of(c.list_naming_instance(svc)))
        expect(left == [p2], "after deregister expected [%d], got %r" % (p2, left))
        # idempotent: removing again (and an unknown service) still answers ok
        expect(c.remove_naming_instance(svc, IP, p1, cluster_name="c1") is True, "second remove not ok")
        expect(c.remove_naming_instance(uniq("nosuch"), IP, p1, cluster_name="c1") is True,
               "remove on unknown service not ok")

    check("py.deregister", run)
    c.remove_naming_instance(svc, IP, p2, cluster_name="c1")


def sc_beat_protocol(ctx):
    c = ctx.client()
    svc = uniq("beat")
    p = fake_port()

    def beat_known():
        expect(c.add_naming_instance(svc, IP, p, cluster_name="c1") is True, "register failed")
        r = c.send_heartbeat(svc, IP, p, cluster_name="c1")
        expect(isinstance(r, dict), "beat response %r" % (r,))
        expect(r.get("code") == 10200, "beat code %r != 10200 (%r)" % (r.get("code"), r))
        expect(r.get("clientBeatInterval") == 5000, "clientBeatInterval %r" % r.get("clientBeatInterval"))

    check("py.beat.response", beat_known)

    # A beat carrying a body for an unknown instance re-registers it (reference §6.1 step 3).
    svc2 = uniq("beatreg")
    p2 = fake_port()

    def beat_unknown():
        r = c.send_heartbeat(svc2, IP, p2, cluster_name="c1", weight=3.0, metadata={"from": "beat"})
        expect(isinstance(r, dict) and r.get("code") == 10200, "beat response %r" % (r,))
        h = find(hosts_of(c.list_naming_instance(svc2)), p2)
        expect(h is not None, "instance not re-registered by beat")
        expect(h.get("clusterName") == "c1", "clusterName %r" % h.get("clusterName"))
        expect(float(h.get("weight", -1)) == 3.0, "weight %r" % h.get("weight"))
        expect(h.get("metadata") == {"from": "beat"}, "metadata %r" % h.get("metadata"))

    check("py.beat.reregisters_unknown", beat_unknown)
    c.remove_naming_instance(svc, IP, p, cluster_name="c1")
    c.remove_naming_instance(svc2, IP, p2, cluster_name="c1")


def sc_heartbeat_keeps_healthy(ctx):
    c = ctx.client()
    svc = uniq("hb")
    p = fake_port()

    p_ctl = fake_port()

    def run():
        ok = c.add_naming_instance(svc, IP, p, cluster_name="c1", heartbeat_interval=5)
        expect(ok is True, "register failed")
        # An unhealthy, non-beating neighbour: without it the protect threshold would report a
        # lone expired instance as healthy and hide a missing beat.
        ok = c.add_naming_instance(svc, IP, p_ctl, cluster_name="c1", healthy=False)
        expect(ok is True, "register control failed")
        time.sleep(22)
        h = find(hosts_of(c.list_naming_instance(svc)), p)
        expect(h is not None, "instance with heartbeats disappeared after 22 s")
        expect(h.get("healthy") is True, "instance with heartbeats unhealthy after 22 s")

    check("py.heartbeat.keeps_healthy_22s", run)
    c.remove_naming_instance(svc, IP, p, cluster_name="c1")  # also stops the beat task
    c.remove_naming_instance(svc, IP, p_ctl, cluster_name="c1")


def sc_beat_expiry(ctx):
    """Beats stop -> unhealthy after ~15 s -> removed after ~30 s.

    A second, beating instance stays in the service so that the protect threshold (which reports
    everything as healthy when nothing is) does not mask the unhealthy flag.
    """
    c = ctx.client()
    svc = uniq("expire")
    p_anchor, p_victim = fake_port(), fake_port()

    if not check("py.expiry.setup", lambda: (
            expect(c.add_naming_instance(svc, IP, p_anchor, cluster_name="c1", heartbeat_interval=5) is True,
                   "anchor register failed"),
            expect(c.add_naming_instance(svc, IP, p_victim, cluster_name="c1") is True,
                   "victim register failed"),
            expect(c.send_heartbeat(svc, IP, p_victim, cluster_name="c1").get("code") == 10200,
                   "victim beat not acknowledged"))):
        return
    last_beat = time.monotonic()
    unhealthy_at = None
    gone_at = None
    seen = []
    while time.monotonic() - last_beat < GONE_WITHIN + 5:
        try:
            hosts = hosts_of(c.list_naming_instance(svc, healthy_only=False))
        except Exception as e:
            seen.append("list error %s" % e)
            time.sleep(1)
            continue
        t = time.monotonic() - last_beat
        v = find(hosts, p_victim)
        if v is not None and v.get("healthy") is False and unhealthy_at is None:
            unhealthy_at = t
        if v is None and gone_at is None:
            gone_at = t
            if unhealthy_at is None:
                unhealthy_at = t  # vanished between two polls? treat as unhealthy at that point
            break
        time.sleep(1)
    anchor = None
    try:
        anchor = find(hosts_of(c.list_naming_instance(svc)), p_anchor)
    except Exception as e:
        seen.append("final list error %s" % e)

    with OUT_LOCK:
        print("# py expiry: unhealthy seen at %s s, gone at %s s after the last beat"
              % (None if unhealthy_at is None else round(unhealthy_at, 1),
                 None if gone_at is None else round(gone_at, 1)), flush=True)

    def unhealthy():
        expect(unhealthy_at is not None, "victim never became unhealthy (%s)" % seen)
        expect(UNHEALTHY_NOT_BEFORE <= unhealthy_at <= UNHEALTHY_WITHIN,
               "victim unhealthy %.1f s after last beat, expected %.0f..%.0f s"
               % (unhealthy_at, UNHEALTHY_NOT_BEFORE, UNHEALTHY_WITHIN))

    def gone():
        expect(gone_at is not None, "victim still listed %.0f s after last beat" % (GONE_WITHIN + 5))
        expect(GONE_NOT_BEFORE <= gone_at <= GONE_WITHIN,
               "victim removed %.1f s after last beat, expected %.0f..%.0f s"
               % (gone_at, GONE_NOT_BEFORE, GONE_WITHIN))

    def anchor_ok():
        expect(anchor is not None, "beating anchor instance disappeared")
        expect(anchor.get("healthy") is True, "beating anchor instance unhealthy")

    check("py.expiry.unhealthy_after_15s", unhealthy)
    check("py.expiry.removed_after_30s", gone)
    check("py.expiry.beating_neighbour_survives", anchor_ok)
    c.remove_naming_instance(svc, IP, p_anchor, cluster_name="c1")


def sc_persistent(ctx):
    c = ctx.client()
    svc = uniq("persist")
    # Persistent instances are TCP-probed by the server: give it something real to connect to.
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((IP, 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    stop = threading.Event()

    def accept_loop():
        lsock.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
                conn.close()
            except OSError:
                pass

    threading.Thread(target=accept_loop, daemon=True).start()
    try:
        def register():
            ok = c.add_naming_instance(svc, IP, port, cluster_name="c1", ephemeral=False)
            expect(ok is True, "register ephemeral=False returned %r" % ok)
            h = find(hosts_of(c.list_naming_instance(svc)), port)
            expect(h is not None, "persistent instance not listed")
            expect(h.get("ephemeral") is False, "ephemeral flag %r != False" % h.get("ephemeral"))

        if not check("py.persistent.register", register):
            return

        def stays():
            time.sleep(36)
            h = find(hosts_of(c.list_naming_instance(svc)), port)
            expect(h is not None, "persistent instance removed without beats after 36 s")

        check("py.persistent.stays_without_beats", stays)

        def remove():
            ok = c.remove_naming_instance(svc, IP, port, cluster_name="c1", ephemeral=False)
            expect(ok is True, "remove returned %r" % ok)
            h = find(hosts_of(c.list_naming_instance(svc)), port)
            expect(h is None, "persistent instance still listed after remove(ephemeral=False)")

        check("py.persistent.deregister", remove)
    finally:
        stop.set()
        lsock.close()


def sc_group_isolation(ctx):
    c = ctx.client()
    svc = uniq("grp")
    pa, pb = fake_port(), fake_port()

    def run():
        expect(c.add_naming_instance(svc, IP, pa, cluster_name="c1", group_name="G-A") is True, "register G-A")
        expect(c.add_naming_instance(svc, IP, pb, cluster_name="c1", group_name="G-B") is True, "register G-B")
        ra = c.list_naming_instance(svc, group_name="G-A")
        expect(ports(hosts_of(ra)) == [pa], "group G-A lists %r" % ports(hosts_of(ra)))
        expect(ra.get("name") == "G-A@@" + svc, "name %r" % ra.get("name"))
        rb = c.list_naming_instance(svc, group_name="G-B")
        expect(ports(hosts_of(rb)) == [pb], "group G-B lists %r" % ports(hosts_of(rb)))
        rd = c.list_naming_instance(svc)
        expect(hosts_of(rd) == [], "DEFAULT_GROUP lists %r" % ports(hosts_of(rd)))
        expect(c.remove_naming_instance(svc, IP, pa, cluster_name="c1", group_name="G-A") is True, "remove G-A")
        expect(ports(hosts_of(c.list_naming_instance(svc, group_name="G-B"))) == [pb],
               "removing from G-A touched G-B")
        expect(hosts_of(c.list_naming_instance(svc, group_name="G-A")) == [], "G-A not empty after remove")

    check("py.isolation.group", run)
    c.remove_naming_instance(svc, IP, pb, cluster_name="c1", group_name="G-B")


def sc_namespace_isolation(ctx):
    ns_a, ns_b = uniq("ns-a"), uniq("ns-b")
    ca, cb, cpub = ctx.client(namespace=ns_a), ctx.client(namespace=ns_b), ctx.client()
    svc = uniq("nsiso")
    pa, pb = fake_port(), fake_port()

    def run():
        expect(ca.add_naming_instance(svc, IP, pa, cluster_name="c1") is True, "register in ns-a")
        expect(cb.add_naming_instance(svc, IP, pb, cluster_name="c1") is True, "register in ns-b")
        got_a = ports(hosts_of(ca.list_naming_instance(svc)))
        expect(got_a == [pa], "namespace a lists %r" % got_a)
        got_b = ports(hosts_of(cb.list_naming_instance(svc)))
        expect(got_b == [pb], "namespace b lists %r" % got_b)
        # explicit namespace_id parameter on a client without namespace
        got_a2 = ports(hosts_of(cpub.list_naming_instance(svc, namespace_id=ns_a)))
        expect(got_a2 == [pa], "namespace_id=a from default client lists %r" % got_a2)
        got_pub = ports(hosts_of(cpub.list_naming_instance(svc)))
        expect(got_pub == [], "default namespace lists %r" % got_pub)
        expect(ca.remove_naming_instance(svc, IP, pa, cluster_name="c1") is True, "remove in ns-a")
        expect(ports(hosts_of(cb.list_naming_instance(svc))) == [pb], "removing in ns-a touched ns-b")

    check("py.isolation.namespace", run)
    cb.remove_naming_instance(svc, IP, pb, cluster_name="c1")


def sc_failover(ctx):
    servers = ",".join([ctx.dead, ctx.servers.split(",")[0]])
    c = ctx.client(servers=servers)
    svc = uniq("failover")
    p = fake_port()

    def run():
        # Python tries server_list[0] (the dead one) first, then switches to the next.
        expect(c.add_naming_instance(svc, IP, p, cluster_name="c1") is True, "register failed")
        h = find(hosts_of(c.list_naming_instance(svc)), p)
        expect(h is not None, "instance not listed")
        expect(c.send_heartbeat(svc, IP, p, cluster_name="c1").get("code") == 10200, "beat failed")
        expect(c.remove_naming_instance(svc, IP, p, cluster_name="c1") is True, "remove failed")
        expect(find(hosts_of(c.list_naming_instance(svc)), p) is None, "still listed after remove")

    check("py.failover.dead_server_first", run)


def sc_subscribe(ctx):
    sub = ctx.client()
    writer = ctx.client()
    svc = uniq("sub")
    p1, p2 = fake_port(), fake_port()
    events = []
    got = threading.Event()

    def on_event(event, slc):
        events.append((event, slc.instance.get("port")))
        if slc.instance.get("port") == p2 and event == "ADDED":
            got.set()

    try:
        def run():
            expect(writer.add_naming_instance(svc, IP, p1, cluster_name="c1") is True, "register 1 failed")
            sub.subscribe([SubscribeListener(on_event, "l1")], 1, service_name=svc)
            time.sleep(1.5)
            expect(writer.add_naming_instance(svc, IP, p2, cluster_name="c1") is True, "register 2 failed")
            expect(got.wait(8), "listener not told about the new instance within 8 s (events %r)" % events)

        check("py.subscribe.poll_listener", run)
    finally:
        sub.stop_subscribe()
    writer.remove_naming_instance(svc, IP, p1, cluster_name="c1")
    writer.remove_naming_instance(svc, IP, p2, cluster_name="c1")


def sc_config(ctx):
    """Publish, read (special characters, multi-byte), update with a type, remove."""
    c = ctx.client()
    data_id = uniq("cfg")
    content = "a: 1\n# \u914d\u7f6e & = % + ? #\n\tend\n"

    def run():
        expect(c.publish_config(data_id, "DEFAULT_GROUP", content) is True, "publish")
        got = c.get_config(data_id, "DEFAULT_GROUP", no_snapshot=True)
        expect(got == content, "get_config returned %r" % (got,))
        expect(c.publish_config(data_id, "DEFAULT_GROUP", "v2", config_type="yaml") is True, "republish")
        got = c.get_config(data_id, "DEFAULT_GROUP", no_snapshot=True)
        expect(got == "v2", "after republish %r" % (got,))
        expect(c.remove_config(data_id, "DEFAULT_GROUP") is True, "remove")
        got = c.get_config(data_id, "DEFAULT_GROUP", no_snapshot=True)
        expect(got is None, "after remove %r" % (got,))

    check("py.config.crud", run)


def wait_until(cond, seconds, what):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise CheckFailed("timed out waiting for %s" % what)
        time.sleep(0.1)


def sc_config_watch(ctx):
    """Watchers: on a config created later, on a change, on a delete, in public and in a
    namespace; get_configs lists a namespace's configs."""
    ns = uniq("cfg-ns")
    for namespace in (None, ns):
        tag = "namespaced" if namespace else "public"
        c = ctx.client(namespace=namespace)
        writer = ctx.client(namespace=namespace)
        data_id = uniq("watch")
        seen = []
        lock = threading.Lock()

        def cb(params, seen=seen, lock=lock):
            with lock:
                seen.append(params.get("content"))

        def has(v, seen=seen, lock=lock):
            with lock:
                return v in seen

        def run(c=c, writer=writer, data_id=data_id, seen=seen, namespace=namespace):
            c.add_config_watcher(data_id, "DEFAULT_GROUP", cb)
            time.sleep(1)
            expect(writer.publish_config(data_id, "DEFAULT_GROUP", "w1") is True, "publish w1")
            wait_until(lambda: has("w1"), 10, "w1 (seen %r)" % seen)
            expect(writer.publish_config(data_id, "DEFAULT_GROUP", "w2") is True, "publish w2")
            wait_until(lambda: has("w2"), 10, "w2 (seen %r)" % seen)
            expect(writer.remove_config(data_id, "DEFAULT_GROUP") is True, "remove")
            wait_until(lambda: has(None), 10, "the delete (seen %r)" % seen)
            if namespace:
                expect(writer.publish_config(data_id, "DEFAULT_GROUP", "listed") is True, "publish")
                page = writer.get_configs(no_snapshot=True)
                items = page.get("pageItems", []) if isinstance(page, dict) else []
                ids = [i.get("dataId") for i in items]
                expect(ids == [data_id], "get_configs in the namespace lists %r" % ids)
                other = ctx.client().get_config(data_id, "DEFAULT_GROUP", no_snapshot=True)
                expect(other is None, "the public namespace sees %r" % (other,))

        check("py.config.watch.%s" % tag, run)
        try:
            c.remove_config_watcher(data_id, "DEFAULT_GROUP", cb, remove_all=True)
        except Exception:
            pass


def sc_config_failover(ctx):
    """With a dead server first in the list, config calls still succeed."""
    c = ctx.client(servers="%s,%s" % (ctx.dead, ctx.servers))
    data_id = uniq("cfg-fo")

    def run():
        expect(c.publish_config(data_id, "DEFAULT_GROUP", "fo") is True, "publish")
        got = c.get_config(data_id, "DEFAULT_GROUP", no_snapshot=True)
        expect(got == "fo", "get_config returned %r" % (got,))

    check("py.config.failover", run)


def sc_auth_refusals(ctx):
    """With auth on: no credentials, a wrong password and a forged token are all refused, and
    the refused registrations store nothing (the listing client has the right credentials)."""
    if not ctx.username:
        return
    svc = uniq("refused")
    port = fake_port()
    servers = ctx.servers

    def refused(what, fn):
        try:
            fn()
        except Exception:
            return
        raise CheckFailed("%s was not refused" % what)

    def run():
        anonymous = nacos.NacosClient(servers, logDir=ctx.log_dir)
        anonymous.set_options(default_timeout=5)
        refused("register without credentials",
                lambda: anonymous.add_naming_instance(svc, IP, port))
        refused("list without credentials", lambda: anonymous.list_naming_instance(svc))
        # 0.1.x logs in from its constructor: the wrong password fails there.
        refused("login with a wrong password",
                lambda: nacos.NacosClient(servers, username=ctx.username,
                                          password=ctx.password + "-wrong", logDir=ctx.log_dir))
        forged = ctx.client()
        forged.token = forged.token[:-4] + ("AAAA" if not forged.token.endswith("AAAA") else "BBBB")
        forged.token_expire_time = time.time() + 3600
        refused("register with a forged token",
                lambda: forged.add_naming_instance(svc, IP, port))
        got = ports(hosts_of(ctx.client().list_naming_instance(svc)))
        expect(got == [], "refused registrations stored %r" % got)

    check("py.auth.refusals", run)


SCENARIOS = {
    "register": sc_register_fields,
    "healthy_only": sc_healthy_only,
    "cluster_filter": sc_cluster_filter,
    "deregister": sc_deregister,
    "beat_protocol": sc_beat_protocol,
    "heartbeat": sc_heartbeat_keeps_healthy,
    "expiry": sc_beat_expiry,
    "persistent": sc_persistent,
    "group_isolation": sc_group_isolation,
    "namespace_isolation": sc_namespace_isolation,
    "failover": sc_failover,
    "subscribe": sc_subscribe,
    "auth_refusals": sc_auth_refusals,
    "config": sc_config,
    "config_watch": sc_config_watch,
    "config_failover": sc_config_failover,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", required=False, default=os.environ.get("NACRE_COMPAT_SERVERS"),
                    help="comma separated ip:port list of live servers (first one is used for failover)")
    ap.add_argument("--endpoint", default=None,
                    help="address-server URL (http://host:port/nacos/serverlist): clients use it "
                         "instead of --servers, except scenarios that need an explicit list")
    ap.add_argument("--dead-server", default=None,
                    help="an address nothing listens on (default: a just-freed loopback port)")
    ap.add_argument("--only", default=None, help="comma separated scenario names")
    ap.add_argument("--username", default=None, help="log in as this user (servers with auth on)")
    ap.add_argument("--password", default=None, help="that user's password")
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    if not args.servers:
        ap.error("--servers is required")
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error("unknown scenario(s): %s (known: %s)" % (", ".join(unknown), ", ".join(SCENARIOS)))
    dead = args.dead_server or "%s:%d" % (IP, free_port())
    log_dir = tempfile.mkdtemp(prefix="nacre-compat-py-")
    ctx = Ctx(args.servers, dead, log_dir, args.endpoint, args.username, args.password)
    print("# nacos-sdk-python %s against %s (endpoint %s, dead server %s, client log %s)"
          % (nacos.client.VERSION, args.servers, args.endpoint, dead, log_dir), flush=True)

    started = time.monotonic()
    threads = []
    for n in names:
        def body(n=n):
            try:
                SCENARIOS[n](ctx)
            except Exception:
                report("py.%s.crashed" % n, False, traceback.format_exc().strip().replace("\n", " | "))
        t = threading.Thread(target=body, name=n, daemon=True)
        t.start()
        threads.append(t)
    deadline = started + 150
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            report("py.%s.timeout" % t.name, False, "scenario still running after 150 s")
    passed = sum(1 for _, ok, _ in RESULTS if ok)
    failed = len(RESULTS) - passed
    print("# elapsed %.1f s" % (time.monotonic() - started), flush=True)
    print("python-legacy: %d passed, %d failed" % (passed, failed), flush=True)
    if failed or not RESULTS:
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)  # kept (and named above) when something failed
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Config watchers start a multiprocessing Manager (a child process holding our stdout);
    # os._exit skips its shutdown, so end the children here or they outlive the driver.
    for child in multiprocessing.active_children():
        child.terminate()
    # subscribe timers / beat tasks are threads of the client library; do not wait for them.
    os._exit(code)
