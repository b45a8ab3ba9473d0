"""Generate the Python gRPC stubs from proto/ (into service/_generated, which git ignores).

Run by `make proto` at install time and, if the stubs are missing or older than the .proto, on
first import of `service.api`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from service.paths import ROOT

PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent / "_generated"
PROTOS = sorted(PROTO_DIR.rglob("*.proto"))


def generate() -> None:
    import grpc_tools
    from grpc_tools import protoc

    OUT_DIR.mkdir(exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        *map(str, PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[str(p) for p in PROTOS]}")


def ensure_generated() -> None:
    """Generate the stubs if they are missing or stale, and make them importable."""
    outputs = [OUT_DIR / p.relative_to(PROTO_DIR).with_name(p.stem + "_pb2.py") for p in PROTOS]
    newest_proto = max(p.stat().st_mtime for p in PROTOS)
    if any(not o.exists() or o.stat().st_mtime < newest_proto for o in outputs):
        generate()
    if str(OUT_DIR) not in sys.path:
        sys.path.insert(0, str(OUT_DIR))


if __name__ == "__main__":
    generate()
    print(f"stubs for {len(PROTOS)} proto file(s) -> {OUT_DIR.relative_to(ROOT)}")
