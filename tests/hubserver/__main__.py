"""Run the fake Hub standalone: ``python -m tests.hubserver [--lora-mb 150] [--repo owner/name]``.

Prints ``HF_ENDPOINT=http://127.0.0.1:<port>`` on the first line, then serves until stdin closes or it is
killed. Used by scripts/bench_pull.py so the server has its own process (and its own GIL).
"""

from __future__ import annotations

import argparse
import sys

from tests.hubserver import HubServer, diffusers_card, lora_safetensors


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hubserver")
    parser.add_argument("--repo", default="bench/lora")
    parser.add_argument("--lora-mb", type=float, default=10.0, help="size of pytorch_lora_weights.safetensors")
    parser.add_argument("--lfs-redirect", action="store_true")
    args = parser.parse_args()
    weights = lora_safetensors(size=int(args.lora_mb * 1e6))
    with HubServer(lfs_redirect=args.lfs_redirect) as server:
        server.hub.create_repo(args.repo, {"README.md": diffusers_card(),
                                           "pytorch_lora_weights.safetensors": weights})
        server.hub.add_static("pytorch_lora_weights.safetensors", weights)
        print(f"HF_ENDPOINT={server.url} SIZE={len(weights)}", flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    main()
