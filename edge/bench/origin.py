#!/usr/bin/env python3
"""Benchmark origin: fixed-size cacheable objects, a slow cold path, and request counters.

GET /obj-<n>     <n> bytes (e.g. obj-1024), Cache-Control: max-age=3600
GET /cold-<name> 4 KiB after 500 ms, cacheable: for the request-collapsing check
GET /__count     JSON {path: requests} of everything served so far
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = {}
LOCK = threading.Lock()
BODIES = {}


def body(size):
    if size not in BODIES:
        BODIES[size] = bytes((i * 7 + 13) % 251 for i in range(size))
    return BODIES[size]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/__count":
            with LOCK:
                payload = json.dumps(COUNTS).encode()
            return self.reply(200, payload, "application/json", cache=False)
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
        if path.startswith("/obj-"):
            try:
                size = int(path[len("/obj-"):])
            except ValueError:
                return self.reply(404, b"bad size", "text/plain", cache=False)
            return self.reply(200, body(size), "application/octet-stream")
        if path.startswith("/cold-"):
            time.sleep(0.5)
            return self.reply(200, body(4096), "application/octet-stream")
        return self.reply(404, b"not found", "text/plain", cache=False)

    def reply(self, status, payload, content_type, cache=True):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
