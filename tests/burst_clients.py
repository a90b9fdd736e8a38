"""Visitors in a process of their own: N gradio_client sessions that submit one request each at the same moment.

Run as ``python tests/burst_clients.py`` with a JSON object on standard input: ``url``, ``endpoint``, ``arguments``
(one dict per visitor) and ``headers`` (one dict per visitor). Each client first makes one round trip that does no
model work (so that the burst measures the request, not the client's first connection), then all submit at once.
Standard output: one JSON line ``{"sessions": [...]}`` once the clients exist, then one line per request as it
ends, ``{"index", "seconds", "refused": message}`` or ``{"index", "seconds", "result"}``.

The server and the clients are apart, as they are for real visitors, so the clients' threads do not share the
server's interpreter.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time

from gradio_client import Client
from gradio_client.exceptions import AppError


def main() -> None:
    job = json.loads(sys.stdin.read())
    arguments, headers = job["arguments"], job["headers"]
    clients = [Client(job["url"], verbose=False, headers=headers[i]) for i in range(len(arguments))]
    print(json.dumps({"sessions": [client.session_hash for client in clients]}), flush=True)
    start = threading.Barrier(len(clients))
    said = threading.Lock()

    def say(line: dict) -> None:
        with said:
            print(json.dumps(line), flush=True)

    def visit(index: int) -> None:
        with contextlib.suppress(AppError):
            clients[index].predict(api_name="/compare")  # refused at once: there is no baseline
        start.wait()
        began = time.perf_counter()
        try:
            result = clients[index].predict(api_name=job["endpoint"], **arguments[index])
        except AppError as exc:
            say({"index": index, "seconds": time.perf_counter() - began, "refused": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the test reports it
            say({"index": index, "seconds": time.perf_counter() - began, "error": repr(exc)})
        else:
            say({"index": index, "seconds": time.perf_counter() - began, "result": result})

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
