#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets into fuzz/corpus/<target>/ (not committed).

Each seed is a stream of Kong-like MsgPack:1 requests. In the dispatcher target an id
below 2^16 names the n-th id the daemon issued of its kind: instance 0 is the instance the
first successful StartInstance started, event 0 the event the first HandleEvent started.
"""
import json, os, struct, sys

def enc(v):
    if v is None: return b"\xc0"
    if v is True: return b"\xc3"
    if v is False: return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128: return bytes([v])
        if 0 <= v < 2**16: return b"\xcd" + struct.pack(">H", v)
        if 0 <= v: return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float): return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str): v = v.encode()
    if isinstance(v, bytes):  # Kong writes fixstr / str16 / str32, never str8
        n = len(v)
        return (bytes([0xa0 | n]) if n < 32 else b"\xda" + struct.pack(">H", n)) + v
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(enc(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(enc(k) + enc(x) for k, x in v.items())
    raise TypeError(v)

msgid = 0
def req(method, arg):
    global msgid
    msgid += 1
    return enc([0, msgid, "plugin." + method, [arg]])

def start(name, config): return req("StartInstance", {"Name": name, "Config": json.dumps(config)})
def handle(iid, phase="access"): return req("HandleEvent", {"InstanceId": iid, "EventName": phase})
def step(eid, data=None, method="Step"):
    return req(method, {"EventId": eid} if data is None else {"EventId": eid, "Data": data})

seeds = {
    "hello-access": start("rust-hello", {"message": "hi"}) + handle(0) + step(0, "example.com")
        + step(0) + step(0) + req("CloseInstance", 0),
    "hello-kong-config": start("rust-hello", {"message": None, "__seq__": 3, "__plugin_id": "p", "route_id": "r"})
        + handle(0) + step(0, ["a", "b"], "StepMultiMap") + req("InstanceStatus", 0),
    "probe-echo": start("e2e-probe", {"mode": "echo"}) + handle(0) + step(0, "x") + step(0) + step(0),
    "probe-exit": start("e2e-probe", {"mode": "exit"}) + handle(0) + step(0) + step(0),
    "probe-panic": start("e2e-probe", {"mode": "panic"}) + handle(0) + step(0, 5),
    "probe-fail": start("e2e-probe", {"mode": "fail"}) + handle(0) + step(0, 2.5),
    "probe-wait": start("e2e-probe", {"mode": "wait", "delay_ms": 1}) + handle(0) + step(0, "x"),
    "probe-bad-config": start("e2e-probe", {"mode": "nope", "extra": 1})
        + start("e2e-probe", {"mode": "echo", "panic_in_new": True}) + start("e2e-probe", []),
    # Phases the probe has no handler for: the daemon ends the request where it can.
    "probe-no-handler": start("e2e-probe", {"mode": "echo"}) + handle(0, "rewrite")
        + handle(0, "preread") + handle(0, "log") + handle(0, "certificate") + handle(0, "response"),
    # Two events of one instance interleaved, then Steps for events already finished.
    "probe-interleaved": start("e2e-probe", {"mode": "echo"}) + handle(0) + handle(0)
        + step(1, "b") + step(0, "a") + step(0) + step(1) + step(0) + step(1) + step(0) + step(1),
    "info": req("GetPluginInfo", "rust-hello") + req("GetStatus", 0) + req("GetPluginInfo", "e2e-probe"),
    "unknown": req("Nope", {}) + handle(7, "log") + step(9) + step(12) + req("CloseInstance", 3)
        + enc([0, 77, "plugin.Step", [1, 2]]) + enc([1, 2, None, None]),
}

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
for target in sys.argv[1:] or ["request_decoder", "dispatcher"]:
    os.makedirs(os.path.join(root, target), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(root, target, "seed-" + name), "wb") as f:
            f.write(data)
print(f"{len(seeds)} seeds per target in {root}")
