"""Write a code-generated adapter file (real layer names and shapes, random numbers) for manual trials.

    python scripts/make_fixture.py sdxl kohya /tmp/sdxl_kohya.safetensors --rank 8 --alpha 4
    python scripts/make_fixture.py sd15 cloneofsimo-pt /tmp/lora_weight.pt
    python scripts/make_fixture.py flux kohya-flux /tmp/flux.safetensors --kohya-metadata

Formats and families: see tests/fixtures/adapters.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.adapters import FAMILIES, FORMATS, kohya_metadata, write_adapter  # noqa: E402
from tests.fixtures.adapter_targets import TARGETS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("path", type=Path)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--components", nargs="+", help="default: what that format usually holds")
    parser.add_argument("--targets", choices=TARGETS, default="attn")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero-up", action="store_true", help="all up/B factors zero (an untrained adapter)")
    parser.add_argument("--unet-prefix", action="store_true", help="attn-procs: prefix keys with 'unet.'")
    parser.add_argument("--sdxl-naming", choices=("sai", "diffusers"), default="sai")
    parser.add_argument("--kohya-metadata", action="store_true", help="add the minimal ss_* header kohya writes")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="extra header metadata")
    args = parser.parse_args(argv)

    metadata = dict(item.split("=", 1) for item in args.meta)
    if args.kohya_metadata:
        metadata = {**kohya_metadata(args.family, args.rank, args.alpha), **metadata}
    path = write_adapter(args.path, args.family, args.format, rank=args.rank, alpha=args.alpha,
                         components=args.components, targets=args.targets, dtype=args.dtype, seed=args.seed,
                         zero_up=args.zero_up, metadata=metadata or None, unet_prefix=args.unet_prefix,
                         sdxl_naming=args.sdxl_naming)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
