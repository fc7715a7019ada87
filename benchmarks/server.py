"""The project's test server (tests/openai_server.py) as a process of its own, for the benchmarks.

    .venv/bin/python -m benchmarks.server --latency 0.05

Prints its base URL on the first line, then answers every chat request with the well-behaved default script
after `latency` seconds, keeping no request (GET /v1/stats gives the count), until stdin closes.
"""

from __future__ import annotations

import argparse
import sys

from tests.openai_server import FakeOpenAI, default_script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    args = parser.parse_args()
    with FakeOpenAI(default_script, args.latency, record=False) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin (or exits)


if __name__ == "__main__":
    main()
