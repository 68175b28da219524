"""Regenerate the Python stubs from ``protos/grpc_service.proto``.

``python -m rtvi.protocol.codegen`` rewrites ``services/rtvi/protocol/_generated``;
``--out DIR`` writes elsewhere (the drift test compares the two).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROTO_DIR = REPO / "protos"
PACKAGE_DIR = "rtvi/protocol/_generated"
PROTO = "grpc_service.proto"


def generate(out_root: Path) -> Path:
    """Write the stubs under ``out_root/rtvi/protocol/_generated`` and return that folder."""
    from grpc_tools import protoc  # a dev dependency: only needed to regenerate

    target = out_root / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    # Mapping the proto folder to the package path makes protoc emit absolute
    # imports (``from rtvi.protocol._generated import ...``).
    args = [
        "protoc",
        f"-I{PACKAGE_DIR}={PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"{PACKAGE_DIR}/{PROTO}",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    (target / "__init__.py").write_text('"""Generated from protos/; do not edit."""\n')
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "services", help="root to write rtvi/protocol/_generated under")
    target = generate(parser.parse_args(argv).out)
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
