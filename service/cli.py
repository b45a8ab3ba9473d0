"""Command line for the gateway: ``sketch2color colorize sketch.png -o out.png --hint 40,60,#ff8800``.

sketch2color variants                                  # what the server holds
sketch2color colorize sketch.png -o out.png            # one sketch
sketch2color colorize sketches/ -o coloured/           # a folder in, a folder out
sketch2color colorize s.png -o o.png --variant pix2pix_blur --color-hint rough.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from service.api import DEFAULT_ADDRESS
from service.client import ColorizerClient, parse_hint

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def colorize(args: argparse.Namespace, client: ColorizerClient) -> int:
    hints = [parse_hint(h) for h in args.hint]
    options = dict(
        variant=args.variant,
        hints=hints,
        color_hint=args.color_hint,
        output_format=args.format,
        model_size=args.model_size,
    )
    source, out = Path(args.input), Path(args.output)
    if source.is_file():
        response = client.colorize_full(source, **options)
        out.write_bytes(response.image)
        print(
            f"{out} ({response.width}x{response.height}, {response.variant} {response.model_version}, "
            f"{response.timings.total_ms:.0f} ms)"
        )
        return 0
    if not source.exists():
        print(f"{source}: no such file or folder", file=sys.stderr)
        return 2
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"no PNG, JPEG or WebP files under {source}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    requests = (client.request(p, request_id=str(p.relative_to(source)), **options) for p in files)
    failed = 0
    for item in tqdm(client.colorize_many(requests), total=len(files), unit="img"):
        if item.HasField("error"):
            failed += 1
            tqdm.write(f"{item.request_id}: {grpc.StatusCode(_status(item.error.code)).name} {item.error.message}")
            continue
        target = (out / item.request_id).with_suffix("." + args.format)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.response.image)
    print(f"{len(files) - failed} coloured into {out}, {failed} failed")
    return 1 if failed else 0


def _status(code: int) -> tuple:
    return next(c.value for c in grpc.StatusCode if c.value[0] == code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sketch2color", description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_ADDRESS, help="gateway address (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("variants", help="list the generator variants")
    c = sub.add_parser("colorize", help="colour a sketch, or every image in a folder")
    c.add_argument("input", help="a sketch image or a folder of them")
    c.add_argument("-o", "--output", required=True, help="output file, or folder for a folder input")
    c.add_argument("--variant", default="", help="default: the server's (guided)")
    c.add_argument(
        "--hint",
        action="append",
        default=[],
        metavar="X,Y,#RRGGBB[,SIZE]",
        help="a colour hint in sketch pixels (or X%%,Y%%); repeat for more",
    )
    c.add_argument("--color-hint", help="rough colour image, for variants that take one")
    c.add_argument("--format", default="png", choices=["png", "jpeg", "webp"])
    c.add_argument("--model-size", action="store_true", help="return the 128x128 model output")
    args = parser.parse_args(argv)
    with ColorizerClient(args.server, timeout=args.timeout) as client:
        try:
            if args.command == "variants":
                listing = client.variants()
                for v in listing.variants:
                    default = " (default)" if v.name == listing.default_variant else ""
                    print(f"{v.name}{default}  v{v.version}  {'ready' if v.ready else 'NOT READY'}  {v.description}")
                return 0
            return colorize(args, client)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
