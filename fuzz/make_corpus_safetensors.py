#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus of fuzz_safetensors into fuzz/corpus/safetensors/.

Valid files cover every dtype read_float converts, metadata, empty tensors and gaps; invalid
ones start the fuzzer next to each check of the reader. Rerun after changing a seed; the files
are committed so the fuzz script needs no Python.
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")


def pack(header, data, pad=True):
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def seeds():
    a, b = f32(1, 2, 3, 4, 5, 6), f32(-1, 0.5, 7)
    yield "valid_f32_metadata", pack(
        {"__metadata__": {"format": "pt", "zo.step": "3"},
         "a": entry("F32", [2, 3], 0, 24), "b": entry("F32", [3], 24, 36)}, a + b)
    half = struct.pack("<4H", 0x3C00, 0xC100, 0x7BFF, 0x0001)
    bf16 = struct.pack("<3H", 0x3F80, 0x7F80, 0x0001)
    f64 = struct.pack("<2d", 1.0, 1e300)
    yield "valid_f16_bf16_f64", pack(
        {"h": entry("F16", [2, 2], 0, 8), "b": entry("BF16", [3], 8, 14),
         "d": entry("F64", [2], 16, 32)}, half + bf16 + b"\0\0" + f64)
    yield "valid_empty_header", pack({}, b"")
    yield "valid_empty_tensor_gap_int", pack(
        {"e": entry("F32", [0, 4], 4, 4), "i": entry("I64", [1], 8, 16),
         "s": entry("F16", [], 16, 18)}, bytes(18))
    yield "valid_opt_like", pack(
        {"model.decoder.layers.0.self_attn.q_proj.weight": entry("F16", [2, 2], 0, 8),
         "model.decoder.layers.0.self_attn.q_proj.bias": entry("F16", [2], 8, 12),
         "lm_head.weight": entry("F16", [1, 2], 12, 16)}, half + half[:4] + half[4:])
    full = pack({"a": entry("F32", [2, 3], 0, 24), "b": entry("F32", [3], 24, 36)}, a + b)
    yield "invalid_truncated_data", full[:-5]
    yield "invalid_truncated_header", full[:20]
    yield "invalid_overlap", pack(
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, bytes(12))
    yield "invalid_json", pack('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}', bytes(4),
                               pad=False)
    yield "invalid_header_length", struct.pack("<Q", 1 << 40) + b"{}"
    yield "invalid_shape_overflow", pack(
        {"a": entry("F32", [4294967296, 4294967296, 16], 0, 16)}, bytes(16))
    yield "invalid_duplicate", pack(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8))
    yield "invalid_size_mismatch", pack({"a": entry("BF16", [3], 0, 8)}, bytes(8))
    yield "invalid_metadata", pack({"__metadata__": {"k": [1]}}, b"")


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds():
        assert len(data) < 2048, name
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
