#!/usr/bin/env python3
"""moto_server for the tests, with DynamoDB's item-level atomicity.

moto_server answers requests on many threads, and its DynamoDB backend evaluates a
condition and applies the write without a lock, so two concurrent conditional writes can
both pass (a lost update that real DynamoDB never allows: it evaluates a condition and
writes an item atomically, and runs a transaction's items as one). This launcher runs the
same moto application, threaded as usual (SQS long polls stay concurrent), but serialises
DynamoDB requests, which restores that guarantee so the optimistic-locking tests test our
code rather than the emulator's race.

Its SQS backend has the same kind of race for FIFO queues: a receive decides which message
groups are busy from a snapshot taken without a lock, so two consumers polling at once can
both take messages of one group (real SQS never hands out a group that has messages in
flight). Receives from FIFO queues are therefore serialised too; their long polls are
emulated outside the lock (short receives until a message or the wait's end), so one
consumer's wait never blocks another's receive.

Usage: python scripts/moto_server.py [-H HOST] [-p PORT]
"""
import argparse
import io
import json
import signal
import sys
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


FIFO_STATE_CHANGES = {
    "AmazonSQS.DeleteMessage",
    "AmazonSQS.DeleteMessageBatch",
    "AmazonSQS.ChangeMessageVisibility",
    "AmazonSQS.ChangeMessageVisibilityBatch",
    "AmazonSQS.SendMessage",
    "AmazonSQS.SendMessageBatch",
}


class SerialDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, one FIFO receive at a time,
    everything else concurrent."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

        self.fifo_lock = threading.Lock()

    def _call(self, environ):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"], captured["exc_info"] = status, headers, exc_info
            return lambda data: None

        result = self.app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return captured, body

    def _fifo_receive(self, environ, request):
        """A FIFO receive under the lock, its long poll as short receives outside it."""
        wait = float(request.get("WaitTimeSeconds") or 0)
        request["WaitTimeSeconds"] = 0
        raw = json.dumps(request).encode()
        deadline = time.monotonic() + wait
        while True:
            env = dict(environ)
            env["wsgi.input"] = io.BytesIO(raw)
            env["CONTENT_LENGTH"] = str(len(raw))
            with self.fifo_lock:
                captured, body = self._call(env)
            try:
                got = json.loads(body or b"{}").get("Messages")
            except ValueError:
                got = None
            if got or time.monotonic() >= deadline or not captured["status"].startswith("200"):
                return captured, body
            time.sleep(0.05)

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target == "AmazonSQS.ReceiveMessage":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            try:
                request = json.loads(raw or b"{}")
            except ValueError:
                request = {}
            if str(request.get("QueueUrl", "")).endswith(".fifo"):
                captured, body = self._fifo_receive(environ, request)
                start_response(captured["status"], captured["headers"], captured["exc_info"])
                return [body]
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.app(environ, start_response)
        if target in FIFO_STATE_CHANGES:
            # What changes a FIFO queue's in-flight groups waits for a receive in progress.
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)
            try:
                fifo = str(json.loads(raw or b"{}").get("QueueUrl", "")).endswith(".fifo")
            except ValueError:
                fifo = False
            if fifo:
                with self.fifo_lock:
                    captured, body = self._call(environ)
                start_response(captured["status"], captured["headers"], captured["exc_info"])
                return [body]
            return self.app(environ, start_response)
        if not target.startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            captured, body = self._call(environ)
        start_response(captured["status"], captured["headers"], captured["exc_info"])
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, SerialDynamoDB(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
