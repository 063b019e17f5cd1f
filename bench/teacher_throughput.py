"""Teacher client throughput: our concurrent OpenAI client vs one sequential client, against a local server.

The reference server is a stdlib HTTP server on 127.0.0.1 that models an inference engine with
`--slots` parallel sequences: each request holds a slot for `--service-ms` (its processing time,
reported back in `openai-processing-ms`) and returns `--tokens` completion tokens. With every slot
busy the server's ceiling is slots * tokens / service time, so

  client overhead = wall time / (total server processing time / slots) - 1

is what our client adds on top of the server's own work (target < 5%: the client saturates the
server). `--model DIR` also runs both clients against `cleanroom serve DIR` (micro-batched real
generation). Prints one JSON line. Bounded: fixed request counts, servers stopped at the end.
`--quick` (CI): fewer requests against a faster reference server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
from benchlib import emit, parser

from cleanroom.teachers import GenParams
from cleanroom.teachers.openai_compat import OpenAITeacher


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: a burst of concurrent connects must not be refused


class SlotServer:
    def __init__(self, slots: int, service_s: float, tokens: int):
        self.slots = threading.Semaphore(slots)
        self.service_s, self.tokens = service_s, tokens
        self.busy = 0.0
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self):
        srv = self
        text = " ".join(["word"] * srv.tokens)

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()  # headers and body go out in separate writes: no Nagle delay
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with srv.slots:
                    t0 = time.perf_counter()
                    time.sleep(srv.service_s)
                    took = time.perf_counter() - t0
                with srv.lock:
                    srv.busy += took
                data = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "length",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 8, "completion_tokens": srv.tokens,
                              "total_tokens": 8 + srv.tokens}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("openai-processing-ms", f"{took * 1000:.1f}")
                self.end_headers()
                self.wfile.write(data)

        return H

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def sequential(url: str, model: str, n: int, max_tokens: int) -> dict:
    """One plain client, one request at a time (the baseline)."""
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    toks, t0 = 0, time.perf_counter()
    for i in range(n):
        r = client.chat.completions.create(model=model, max_tokens=max_tokens,
                                           messages=[{"role": "user", "content": f"prompt {i}"}])
        toks += r.usage.completion_tokens
    wall = time.perf_counter() - t0
    client.close()
    return {"requests": n, "completion_tokens": toks, "seconds": round(wall, 3), "tok_per_s": round(toks / wall, 1)}


def concurrent(url: str, model: str, n: int, max_tokens: int, concurrency: int) -> dict:
    teacher = OpenAITeacher(url, model, concurrency=concurrency, timeout=300, max_retries=2)
    t0 = time.perf_counter()
    outs = teacher.generate([f"prompt {i}" for i in range(n)], GenParams(max_tokens=max_tokens))
    wall = time.perf_counter() - t0
    toks = sum(c.completion_tokens for c in outs)
    return {"requests": n, "concurrency": concurrency, "completion_tokens": toks, "seconds": round(wall, 3),
            "tok_per_s": round(toks / wall, 1), "retries": teacher.stats.retries}


def bench_slot_server(args) -> dict:
    srv = SlotServer(args.slots, args.service_ms / 1000, args.tokens)
    try:
        seq = sequential(srv.url, "m", args.seq_requests, args.tokens)
        srv.busy = 0.0
        conc = concurrent(srv.url, "m", args.requests, args.tokens, args.concurrency)
        busy = srv.busy
    finally:
        srv.close()
    ideal_wall = busy / args.slots
    ceiling = args.slots * args.tokens / (args.service_ms / 1000)
    return {
        "server": {"kind": "slot model", "slots": args.slots, "service_ms": args.service_ms,
                   "tokens_per_request": args.tokens, "ceiling_tok_per_s": round(ceiling, 1)},
        "sequential": seq, "concurrent": conc,
        "speedup_vs_sequential": round(conc["tok_per_s"] / seq["tok_per_s"], 2),
        "share_of_server_ceiling": round(conc["tok_per_s"] / ceiling, 4),
        "client_overhead": round(conc["seconds"] / ideal_wall - 1, 4),
        "target": "client_overhead < 0.05",
    }


def bench_cleanroom_serve(args) -> dict:
    from cleanroom.serve import ModelServer, start_server

    server = ModelServer(args.model, batch_size=args.concurrency)
    httpd, _ = start_server(server)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        seq = sequential(url, server.name, args.model_requests // 4, args.model_tokens)
        server.stats["busy_seconds"] = 0.0
        conc = concurrent(url, server.name, args.model_requests, args.model_tokens, args.concurrency)
        busy = server.stats["busy_seconds"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.close()
    return {"server": {"kind": "cleanroom serve", "model": server.name}, "sequential": seq, "concurrent": conc,
            "speedup_vs_sequential": round(conc["tok_per_s"] / seq["tok_per_s"], 2),
            "server_busy_share": round(busy / conc["seconds"], 4)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--service-ms", type=float, default=100.0)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=480)
    ap.add_argument("--seq-requests", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--model", help="also bench `cleanroom serve MODEL` (dir, .gguf, or smollm2)")
    ap.add_argument("--model-requests", type=int, default=64)
    ap.add_argument("--model-tokens", type=int, default=32)
    args = ap.parse_args()
    if args.quick:
        args.service_ms, args.requests, args.seq_requests = 20.0, 96, 8
    out = {"bench": "teacher_throughput", "slot_server": bench_slot_server(args)}
    if args.model:
        out["cleanroom_serve"] = bench_cleanroom_serve(args)
    emit(out)


if __name__ == "__main__":
    main()
