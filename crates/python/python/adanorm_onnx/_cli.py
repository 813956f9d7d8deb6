"""The ``adanorm-onnx`` console script: the same command line as the Rust binary, run in this
process by the native module (same commands, output and exit statuses)."""

import sys

from . import _native


def main() -> None:
    sys.stdout.flush()
    sys.exit(_native.main(["adanorm-onnx", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
