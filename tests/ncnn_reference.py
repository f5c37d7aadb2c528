"""An independent numpy forward pass of an ncnn graph, straight from its .param/.bin files.

Written from ncnn's reference layers (src/layer/convolution.cpp, deconvolution.cpp, ...) without
using mediad's reader, so a conversion is checked against the raw weights, not against itself.
Only what the built-in upscalers use: Input, Split, Convolution (any kernel, pad, fused
activation), Deconvolution (scatter form, then `pad` cut from every side), PReLU, PixelShuffle,
nearest Interp and BinaryOp add. fp16-tagged weights only (what the packages ship).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FP16_TAG = 0x01306B47


def _params(tokens: list[str]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for kv in tokens:
        key, value = kv.split("=")
        k = int(key)
        if k <= -23300:  # array: "count,v1,..."
            out[-k - 23300] = [float(v) for v in value.split(",")[1:]]
        else:
            out[k] = [float(value)]
    return out


class _Bin:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def fp16_tagged(self, count: int) -> np.ndarray:
        (tag,) = struct.unpack_from("<I", self.data, self.pos)
        assert tag == FP16_TAG, f"tag {tag:#x}: the packages store weights as tagged fp16"
        w = np.frombuffer(self.data, "<f2", count, self.pos + 4).astype(np.float64)
        self.pos += 4 + (2 * count + 3) // 4 * 4
        return w

    def fp32(self, count: int) -> np.ndarray:
        v = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float64)
        self.pos += 4 * count
        return v


def _activate(v: np.ndarray, p: dict[int, list[float]]) -> np.ndarray:
    kind = int(p.get(9, [0])[0])
    if kind == 0:
        return v
    if kind == 1:
        return np.maximum(v, 0)
    assert kind == 2, f"activation {kind}"
    return np.where(v > 0, v, v * p[10][0])


def _conv(src: np.ndarray, w: np.ndarray, b: np.ndarray, k: int, pad: int) -> np.ndarray:
    c, h, wd = src.shape
    src = np.pad(src, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    cols = np.stack([src[:, i : i + oh, j : j + ow] for i in range(k) for j in range(k)], 1)
    out = w.reshape(-1, c * k * k) @ cols.reshape(c * k * k, oh * ow)
    return out.reshape(-1, oh, ow) + b[:, None, None]


def _deconv(src: np.ndarray, w: np.ndarray, b: np.ndarray, k: int, s: int, pad: int) -> np.ndarray:
    """ncnn Deconvolution: out[p][y*s+ky][x*s+kx] += in[q][y][x] * w[p][q][ky][kx], then crop."""
    c, h, wd = src.shape
    w = w.reshape(-1, c, k, k)
    full = np.zeros((w.shape[0], (h - 1) * s + k, (wd - 1) * s + k)) + b[:, None, None]
    for ky in range(k):
        for kx in range(k):
            tap = np.einsum("pq,qyx->pyx", w[:, :, ky, kx], src)
            full[:, ky : ky + (h - 1) * s + 1 : s, kx : kx + (wd - 1) * s + 1 : s] += tap
    return full[:, pad : full.shape[1] - pad, pad : full.shape[2] - pad]


def ncnn_forward(param: Path, bin_path: Path, x: np.ndarray) -> np.ndarray:
    """Run the graph on x (C,H,W) in float64; returns the last layer's first output."""
    lines = [ln for ln in param.read_text().split("\n") if ln.strip()]
    assert lines[0].strip() == "7767517"
    rd = _Bin(bin_path.read_bytes())
    blobs: dict[str, np.ndarray] = {}
    last = ""
    for line in lines[2:]:
        tok = line.split()
        kind, n_in, n_out = tok[0], int(tok[2]), int(tok[3])
        ins, outs = tok[4 : 4 + n_in], tok[4 + n_in : 4 + n_in + n_out]
        p = _params(tok[4 + n_in + n_out :])
        if kind == "Input":
            v = x.astype(np.float64)
        elif kind == "Split":
            for o in outs:
                blobs[o] = blobs[ins[0]]
            continue
        elif kind in ("Convolution", "Deconvolution"):
            out_ch, k, count = int(p[0][0]), int(p[1][0]), int(p[6][0])
            stride, pad = int(p.get(3, [1])[0]), int(p.get(4, [0])[0])
            w = rd.fp16_tagged(count)
            b = rd.fp32(out_ch) if int(p.get(5, [0])[0]) else np.zeros(out_ch)
            if kind == "Convolution":
                assert stride == 1
                v = _conv(blobs[ins[0]], w, b, k, pad)
            else:
                v = _deconv(blobs[ins[0]], w, b, k, stride, pad)
            v = _activate(v, p)
        elif kind == "PReLU":
            v = blobs[ins[0]]
            v = np.where(v > 0, v, v * rd.fp32(int(p[0][0]))[:, None, None])
        elif kind == "PixelShuffle":
            r = int(p[0][0])
            v = blobs[ins[0]]
            c, h, wd = v.shape
            v = v.reshape(c // (r * r), r, r, h, wd).transpose(0, 3, 1, 4, 2)
            v = v.reshape(c // (r * r), h * r, wd * r)
        elif kind == "Interp":
            assert int(p[0][0]) == 1  # nearest
            r = round(p[1][0])
            v = blobs[ins[0]].repeat(r, axis=1).repeat(r, axis=2)
        elif kind == "BinaryOp":
            assert int(p.get(0, [0])[0]) == 0  # add
            v = blobs[ins[0]] + blobs[ins[1]]
        else:
            raise AssertionError(f"unexpected layer {kind}")
        blobs[outs[0]] = v
        last = outs[0]
    assert rd.pos == len(rd.data), "weights left over: the graph was not read as ncnn reads it"
    return blobs[last]
