"""Read ncnn `.param`/`.bin` model files and turn the upscalers' graphs into state dicts.

Two graphs are understood: Real-ESRGAN's SRVGGNetCompact (`srvgg_state_dict`) and waifu2x's
upconv_7 (`upconv7_state_dict`); `detect_arch` tells them apart.

Only numpy is needed here. Format notes (ncnn src/net.cpp, src/modelbin.cpp):

- `.param` text: magic `7767517`, then `layer_count blob_count`, then one line per layer:
  `Type name n_in n_out in... out... key=value...`; keys <= -23300 hold arrays `n,v1,...,vn`.
- `.bin`: each layer's weights, in layer order, with no index. A blob loaded as "type 0"
  (Convolution weights) starts with a 4-byte tag: 0x01306B47 fp16 (payload padded to 4 bytes),
  0x000D4B38 int8, 0x0002C056 or 0 fp32, other non-zero: a 256-entry fp32 codebook + uint8 indices.
  "Type 1" blobs (Convolution bias, PReLU slopes) are bare fp32 with no tag.
- Deconvolution (src/layer/deconvolution.cpp) stores its weights like Convolution, as
  [out][in][kh][kw], and scatters: out[p][y*stride + ky][x*stride + kx] += in[q][y][x] * w[p][q][ky][kx],
  then cuts `pad` (key 4) from every side. PyTorch's ConvTranspose2d has the same arithmetic with
  its weight laid out [in][out][kh][kw] (no spatial flip).
- Key 9 is a fused activation (1 ReLU, 2 LeakyReLU with slope = key 10[0], ...).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mediad.errors import MediadError, Reason

PARAM_MAGIC = 7767517
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_FP32_SCALED = 0x0002C056
# Layer types that own no weights in the .bin (so the reader can walk past them).
_WEIGHTLESS = frozenset(
    {"Input", "Split", "Concat", "Crop", "Slice", "PixelShuffle", "Interp", "BinaryOp", "Eltwise"}
    | {"ReLU", "Clip", "Sigmoid", "TanH", "Noop", "Reshape", "Permute", "Flatten"}
)

ParamValue = int | float | tuple[int | float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn .param file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        """Parameter `key` (the number before `=`), or ncnn's default for it."""
        return self.params.get(key, default)


def _number(text: str) -> int | float:
    # ncnn writes floats with a '.' or an exponent; plain digits are ints.
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(path: Path) -> list[NcnnLayer]:
    """The layers of an ncnn text `.param` file, in file (= weight) order."""
    try:
        lines = path.read_text(encoding="ascii").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise MediadError(
            f"{path}: cannot read the ncnn .param file ({e})", reason=Reason.BAD_MODEL
        ) from e
    lines = [ln.strip() for ln in lines if ln.strip()]
    if len(lines) < 2 or lines[0] != str(PARAM_MAGIC):
        raise MediadError(f"{path}: not an ncnn text .param file (bad magic)", reason=Reason.BAD_MODEL)
    try:
        layer_count = int(lines[1].split()[0])
        layers = [_parse_layer(ln) for ln in lines[2:]]
    except (ValueError, IndexError) as e:
        raise MediadError(f"{path}: malformed ncnn .param line ({e})", reason=Reason.BAD_MODEL) from e
    if len(layers) != layer_count:
        raise MediadError(
            f"{path}: header says {layer_count} layers, file has {len(layers)}", reason=Reason.BAD_MODEL
        )
    return layers


def _parse_layer(line: str) -> NcnnLayer:
    tok = line.split()
    ltype, name, n_in, n_out = tok[0], tok[1], int(tok[2]), int(tok[3])
    inputs = tuple(tok[4 : 4 + n_in])
    outputs = tuple(tok[4 + n_in : 4 + n_in + n_out])
    if len(outputs) != n_out:
        raise ValueError(f"layer {name}: {n_out} outputs announced, fewer given")
    params: dict[int, ParamValue] = {}
    for kv in tok[4 + n_in + n_out :]:
        key_text, value = kv.split("=", 1)
        key = int(key_text)
        if key <= -23300:  # array parameter: "count,v1,...,vcount" stored under id -key-23300
            count, *values = value.split(",")
            if int(count) != len(values):
                raise ValueError(f"layer {name}: array param {key} has a wrong count")
            params[-key - 23300] = tuple(_number(v) for v in values)
        else:
            params[key] = _number(value)
    return NcnnLayer(ltype, name, inputs, outputs, params)


class _BinReader:
    """Sequential reader of an ncnn .bin with modelbin.cpp's load(w, type) semantics."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def _take(self, size: int, what: str) -> bytes:
        if self.pos + size > len(self.data):
            raise MediadError(
                f"{self.source}: ends early while reading {what} (weights do not match the .param)",
                reason=Reason.BAD_MODEL,
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        """A bare little-endian fp32 array (load type 1)."""
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        """A tagged array (load type 0): fp16, fp32 or codebook-quantized, as fp32."""
        tag_bytes = self._take(4, what)
        (tag,) = struct.unpack("<I", tag_bytes)
        if tag == _TAG_FP16:
            payload = self._take((2 * count + 3) // 4 * 4, what)  # padded to 4 bytes
            return np.frombuffer(payload[: 2 * count], dtype="<f2").astype(np.float32)
        if tag == _TAG_INT8:
            raise MediadError(
                f"{self.source}: {what} is int8-quantized ncnn data, which is not supported",
                reason=Reason.BAD_MODEL,
            )
        if tag in (0, _TAG_FP32_SCALED):
            return self.raw_fp32(count, what)
        # Any other non-zero tag: a 256-entry fp32 codebook then one uint8 index per value.
        self.pos -= 4
        table = self.raw_fp32(256, what)
        index = np.frombuffer(self._take((count + 3) // 4 * 4, what)[:count], dtype=np.uint8)
        return table[index]


def read_bin(layers: list[NcnnLayer], bin_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Weights per layer name ({'weight', 'bias'} or {'slope'}), checking the file size exactly."""
    try:
        data = bin_path.read_bytes()
    except OSError as e:
        raise MediadError(
            f"{bin_path}: cannot read the ncnn .bin file ({e.strerror})", reason=Reason.BAD_MODEL
        ) from e
    rd = _BinReader(data, str(bin_path))
    weights: dict[str, dict[str, np.ndarray]] = {}
    for layer in layers:
        if layer.type in ("Convolution", "Deconvolution"):
            # Both store tagged weights [out][in][kh][kw], then (bias_term) bare fp32 biases.
            # Convolution: 8 int8_scale_term, 19 dynamic_weight; Deconvolution: 28 dynamic_weight.
            special = (8, 19) if layer.type == "Convolution" else (28,)
            if any(layer.get(k, 0) for k in special):
                raise MediadError(
                    f"{bin_path}: layer {layer.name} is int8 or dynamic-weight, not supported",
                    reason=Reason.BAD_MODEL,
                )
            count = int(layer.get(6, 0))
            w = {"weight": rd.tagged(count, f"{layer.name} weights")}
            if layer.get(5, 0):
                w["bias"] = rd.raw_fp32(int(layer.get(0, 0)), f"{layer.name} bias")
            weights[layer.name] = w
        elif layer.type == "PReLU":
            weights[layer.name] = {
                "slope": rd.raw_fp32(int(layer.get(0, 0)), f"{layer.name} slopes")
            }
        elif layer.type not in _WEIGHTLESS:
            raise MediadError(
                f"{bin_path}: ncnn layer type {layer.type} ({layer.name}) is not supported",
                reason=Reason.BAD_MODEL,
            )
    if rd.pos != len(data):
        raise MediadError(
            f"{bin_path}: {len(data) - rd.pos} bytes left after the last layer "
            "(weights do not match the .param)",
            reason=Reason.BAD_MODEL,
        )
    return weights


def srvgg_state_dict(param_path: Path, bin_path: Path) -> tuple[dict[str, np.ndarray], int]:
    """SRVGGNetCompact weights (upstream key names) and native upscale of an ncnn export."""
    layers = parse_param(param_path)
    weights = read_bin(layers, bin_path)
    src = str(param_path)

    def bad(why: str) -> MediadError:
        return MediadError(f"{src}: not an ncnn SRVGGNetCompact export ({why})", reason=Reason.BAD_MODEL)

    body = [ly for ly in layers if ly.type in ("Convolution", "PReLU")]
    kinds = [ly.type for ly in body]
    n_conv = kinds.count("Convolution")
    if n_conv < 2 or kinds != ["Convolution", "PReLU"] * (n_conv - 1) + ["Convolution"]:
        raise bad("expected conv/PReLU pairs and a final conv")
    shuffle = [ly for ly in layers if ly.type == "PixelShuffle"]
    if len(shuffle) != 1:
        raise bad("expected one PixelShuffle")
    upscale = int(shuffle[0].get(0, 1))
    if shuffle[0].get(1, 0) != 0:
        raise bad("PixelShuffle mode is not PyTorch's")
    # The residual path: nearest-neighbour upsample of the input by the same factor.
    nearest = [ly for ly in layers if ly.type == "Interp" and ly.get(0, 0) == 1]
    if len(nearest) != 1 or float(nearest[0].get(1, 1.0)) != upscale:
        raise bad(f"expected a nearest x{upscale} Interp for the residual")

    sd: dict[str, np.ndarray] = {}
    in_ch = 3
    idx = 0
    for ly in body:
        w = weights[ly.name]
        if ly.type == "PReLU":
            sd[f"body.{idx}.weight"] = w["slope"]
            idx += 1
            continue
        out_ch, k = int(ly.get(0, 0)), int(ly.get(1, 0))
        geometry = (int(ly.get(11, k)), int(ly.get(2, 1)), int(ly.get(3, 1)), int(ly.get(4, 0)))
        if k != 3 or geometry != (3, 1, 1, 1) or int(ly.get(9, 0)) != 0 or "bias" not in w:
            raise bad(f"layer {ly.name} is not a biased 3x3 stride-1 pad-1 conv")
        if w["weight"].size != out_ch * in_ch * 9:
            raise bad(f"layer {ly.name} has {w['weight'].size} weights, not {out_ch}x{in_ch}x3x3")
        # ncnn stores conv weights as [out][in][kh][kw], the same order as PyTorch.
        sd[f"body.{idx}.weight"] = w["weight"].reshape(out_ch, in_ch, 3, 3)
        sd[f"body.{idx}.bias"] = w["bias"]
        in_ch = out_ch
        idx += 1
    if in_ch != 3 * upscale * upscale:
        raise bad(f"last conv has {in_ch} outputs, PixelShuffle x{upscale} needs {3 * upscale**2}")
    return sd, upscale


def detect_arch(layers: list[NcnnLayer]) -> str:
    """'upconv7' for a graph that ends in a Deconvolution (waifu2x), else 'srvgg'."""
    return "upconv7" if any(ly.type == "Deconvolution" for ly in layers) else "srvgg"


def _pads(ly: NcnnLayer) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) padding of a (De)Convolution; ncnn defaults follow left/top."""
    left = int(ly.get(4, 0))
    top = int(ly.get(14, left))
    return left, top, int(ly.get(15, left)), int(ly.get(16, top))


def upconv7_state_dict(param_path: Path, bin_path: Path) -> tuple[dict[str, np.ndarray], int]:
    """waifu2x upconv_7 weights (keys of mediad.models.upconv7.UpConv7) and native upscale.

    The graph: a chain of valid (unpadded) 3x3 convolutions, each with a fused LeakyReLU(0.1),
    then one 4x4 stride-2 Deconvolution that cuts 3 pixels from every side. The caller pads the
    input by the convolutions' shrink (waifu2x-ncnn-vulkan's "prepadding").
    """
    layers = parse_param(param_path)
    weights = read_bin(layers, bin_path)

    def bad(why: str) -> MediadError:
        return MediadError(
            f"{param_path}: not an ncnn waifu2x upconv_7 export ({why})", reason=Reason.BAD_MODEL
        )

    body = [ly for ly in layers if ly.type != "Input"]
    kinds = [ly.type for ly in body]
    if len(body) < 2 or kinds != ["Convolution"] * (len(body) - 1) + ["Deconvolution"]:
        raise bad("expected 3x3 convolutions and a final Deconvolution")
    for prev, ly in zip(body, body[1:], strict=False):
        if ly.inputs != prev.outputs:
            raise bad(f"layer {ly.name} does not take {prev.name}'s output")
    sd: dict[str, np.ndarray] = {}
    in_ch = 3
    for i, ly in enumerate(body[:-1]):
        w = weights[ly.name]
        out_ch, k = int(ly.get(0, 0)), int(ly.get(1, 0))
        geometry = (k, int(ly.get(11, k)), int(ly.get(2, 1)), int(ly.get(3, 1)), _pads(ly))
        if geometry != (3, 3, 1, 1, (0, 0, 0, 0)) or "bias" not in w:
            raise bad(f"layer {ly.name} is not a biased 3x3 stride-1 unpadded conv")
        slope = ly.get(10, ())
        if int(ly.get(9, 0)) != 2 or not isinstance(slope, tuple) or slope != (0.1,):
            raise bad(f"layer {ly.name} has no fused LeakyReLU(0.1)")
        if w["weight"].size != out_ch * in_ch * 9:
            raise bad(f"layer {ly.name} has {w['weight'].size} weights, not {out_ch}x{in_ch}x3x3")
        sd[f"net.{2 * i}.weight"] = w["weight"].reshape(out_ch, in_ch, 3, 3)
        sd[f"net.{2 * i}.bias"] = w["bias"]
        in_ch = out_ch
    de = body[-1]
    w = weights[de.name]
    out_ch, k, stride = int(de.get(0, 0)), int(de.get(1, 0)), int(de.get(3, 1))
    geometry = (out_ch, k, int(de.get(11, k)), int(de.get(2, 1)), stride, int(de.get(13, stride)))
    extra = [int(de.get(key, 0)) for key in (9, 18, 19, 20, 21)]  # activation, output pad/size
    if geometry != (3, 4, 4, 1, 2, 2) or _pads(de) != (3, 3, 3, 3) or any(extra):
        raise bad(f"layer {de.name} is not a 4x4 stride-2 pad-3 deconvolution to 3 channels")
    if "bias" not in w or w["weight"].size != out_ch * in_ch * 16:
        raise bad(f"layer {de.name} has {w['weight'].size} weights, not 3x{in_ch}x4x4 and a bias")
    # ncnn [out][in][kh][kw] -> ConvTranspose2d [in][out][kh][kw]; the same taps, no flip.
    sd[f"net.{2 * len(body) - 2}.weight"] = w["weight"].reshape(3, in_ch, 4, 4).transpose(1, 0, 2, 3)
    sd[f"net.{2 * len(body) - 2}.bias"] = w["bias"]
    return sd, stride
