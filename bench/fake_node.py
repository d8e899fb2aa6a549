#!/usr/bin/env python3
"""A stand-in node for bench/router.sh: registers with the controller over the real agent
protocol and reports every instance assigned to it as running on one fixed port (the benchmark's
upstream server), so the router is measured in front of an upstream that costs next to nothing.

    fake_node.py CONTROLLER_URL JOIN_TOKEN NODE_NAME UPSTREAM_PORT [BAD_PORT]

With BAD_PORT, instances whose env has BENCH_BAD=1 are reported on that port instead (the bad
revision of bench/canary.sh).
"""
import datetime
import io
import json
import tarfile
import sys
import time
import urllib.request

base, join_token, name, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
bad_port = int(sys.argv[5]) if len(sys.argv) > 5 else port
capacity = {"memory_mb": 65536, "disk_mb": 65536, "instance_slots": 100}


def call(method, path, token, body=None, raw=None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, method=method, data=data)
    req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


reg = call("POST", "/v1/agent/register", join_token,
           {"node_name": name, "address": "127.0.0.1", "zone": "bench", "labels": {}, "capacity": capacity})
token = reg["node_token"]
since = datetime.datetime.now(datetime.timezone.utc).isoformat()
while True:
    got = call("GET", "/v1/agent/assignments", token)
    for b in got.get("builds", []):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("app/README")
            body = b"bench droplet\n"
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
        up = call("PUT", f"/v1/agent/builds/{b['build_id']}/droplet", token, raw=buf.getvalue())
        call("POST", f"/v1/agent/builds/{b['build_id']}/result", token,
             {"droplet": up["sha256"], "processes": {"web": "true"}})
    assigned = got["instances"]
    reports = [{"instance_id": a["instance_id"], "state": "running", "container_id": "bench", "host_port": bad_port if a.get("env", {}).get("BENCH_BAD") == "1" else port,
                "restarts": 0, "last_exit": None, "since": since} for a in assigned]
    call("POST", "/v1/agent/heartbeat", token, {"capacity": capacity, "instances": reports})
    time.sleep(0.5)
