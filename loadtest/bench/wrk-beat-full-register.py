"""Registers the 1,000 instances wrk-beat-full.lua beats (same addresses and metadata)."""
import sys, urllib.request, urllib.parse, json
base = sys.argv[1]
for i in range(1000):
    svc = "wsvc%d" % (i % 10)
    ip = "10.0.%d.%d" % (i // 256, i % 256)
    q = urllib.parse.urlencode({"serviceName": svc, "groupName": "DEFAULT_GROUP", "namespaceId": "public", "ip": ip, "port": 8080,
        "clusterName": "DEFAULT", "weight": "1.0", "ephemeral": "true",
        "metadata": json.dumps({"version": "1.0.3", "zone": "zone-a", "management.port": "8081"})})
    r = urllib.request.urlopen(urllib.request.Request(base + "/nacos/v1/ns/instance?" + q, method="POST"))
    assert r.read() == b"ok", i
print("registered 1000")
