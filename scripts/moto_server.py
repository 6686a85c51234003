#!/usr/bin/env python3
"""moto_server for the tests, with DynamoDB's item-level atomicity.

moto_server answers requests on many threads, and its DynamoDB backend evaluates a
condition and applies the write without a lock, so two concurrent conditional writes can
both pass (a lost update that real DynamoDB never allows: it evaluates a condition and
writes an item atomically, and runs a transaction's items as one). This launcher runs the
same moto application, threaded as usual (SQS long polls stay concurrent), but serialises
DynamoDB requests, which restores that guarantee so the optimistic-locking tests test our
code rather than the emulator's race.

Usage: python scripts/moto_server.py [-H HOST] [-p PORT]
"""
import argparse
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


class SerialDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, everything else concurrent."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
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
