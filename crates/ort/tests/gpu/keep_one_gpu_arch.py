"""Zeroes the machine code for every GPU architecture but one in a CUDA shared library, so that it
compresses to a fraction of its size (onnxruntime-gpu's CUDA provider: 284 MB, 218 MB of it
cubins for sm_75..sm_120). The file keeps its size and layout; only payloads of other
architectures become zeros, which the CUDA runtime never reads on a GPU of the kept one.

Layout read here (the `.nv_fatbin` ELF section): a run of fat binaries, each a 16-byte header
(magic 0xBA55ED50, u16 version, u16 header size, u64 size of the entries) followed by entries,
each with its own header (u16 kind, u16, u32 header size, u64 payload size, ..., u32 arch at
offset 28) and payload.

    python keep_one_gpu_arch.py IN.so OUT.so 90
"""

import struct
import sys

FATBIN_MAGIC = 0xBA55ED50


def section(data, wanted):
    """(offset, size) of the ELF64 section named `wanted`."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for name, _, _, _, offset, size in headers:
        end = data.index(b"\0", names_at + name)
        if data[names_at + name:end].decode() == wanted:
            return offset, size
    raise SystemExit(f"no {wanted} section: not a CUDA library")


def keep_arch(data, arch):
    """Zeroes other architectures' payloads in place; returns (bytes kept, bytes zeroed)."""
    start, size = section(data, ".nv_fatbin")
    pos, end = start, start + size
    kept = zeroed = 0
    while pos + 16 <= end:
        magic, _, header, body = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fat binaries are 8-byte aligned, padding between them
            continue
        entry, stop = pos + header, pos + header + body
        while entry < stop:
            _, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            entry_arch = struct.unpack_from("<I", data, entry + 28)[0]
            first = entry + entry_header
            if entry_arch == arch:
                kept += payload
            else:
                data[first:first + payload] = bytes(payload)
                zeroed += payload
            entry = first + payload
        pos = stop
    if not kept:
        raise SystemExit(f"no machine code for sm_{arch} in the library: keeping nothing would break it")
    return kept, zeroed


def main():
    src, dst, arch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    data = bytearray(open(src, "rb").read())
    kept, zeroed = keep_arch(data, arch)
    with open(dst, "wb") as f:
        f.write(data)
    print(f"{src}: kept {kept / 1e6:.1f} MB of sm_{arch} code, zeroed {zeroed / 1e6:.1f} MB of other GPUs'")


if __name__ == "__main__":
    main()
