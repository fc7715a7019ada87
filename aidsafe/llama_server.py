"""`python -m aidsafe.llama_server ARGS`: llama-cpp-python's OpenAI-compatible server, exactly as
`python -m llama_cpp.server ARGS` runs it (same arguments, same code), with aidsafe's chat format
(aidsafe.llama_chat, `--chat_format aidsafe-chatml-tools`) registered in the server's process first.
"""

from __future__ import annotations

import runpy

import aidsafe.llama_chat  # noqa: F401  (registers the chat format on import)


def main() -> None:
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
