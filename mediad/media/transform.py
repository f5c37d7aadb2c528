"""Rotation, crop, deinterlacing, scaling and pixel-format conversion of decoded frames on the
host, in one libavfilter graph (the same code as the ffmpeg command line)."""

from __future__ import annotations

from fractions import Fraction

import av

from mediad.media import color
from mediad.media.plan_records import VideoPlan


def is_rgb(pix_fmt: str | None) -> bool:
    """Whether a pixel format holds RGB (or palette/Bayer) samples rather than YUV."""
    try:
        fmt = av.VideoFormat(pix_fmt)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return bool(fmt.is_rgb or fmt.has_palette or fmt.is_bayer)


def encoder_colour(icc: av.video.codeccontext.VideoCodecContext, height: int,
                   ) -> tuple[bool, str | None]:
    """(full range, matrix) of the samples an encoder gets from this decoder's frames.

    YUV sources keep their range (full-range camera/JPEG video stays full, as FFmpeg's range
    negotiation does for encoders that take both; NVDEC frames kept on the GPU are never
    rescaled either). RGB has no YUV range: it becomes limited range, the video norm, in the
    matrix players assume for the output `height`, tagged so nobody has to guess.
    """
    if is_rgb(icc.pix_fmt):
        return False, color.matrix_for(None, height)
    return color.is_full_range(icc.color_range, icc.pix_fmt), None


def tag_colour(icc: av.video.codeccontext.VideoCodecContext,
               occ: av.video.codeccontext.VideoCodecContext, full_range: bool,
               matrix: str | None) -> None:
    """Tag the encoder with the source's colour, and the range and matrix really written."""
    for attr in ("colorspace", "color_primaries", "color_trc"):
        value = getattr(icc, attr, None)
        if value:  # 0 is RGB for colorspace, reserved otherwise: nothing to copy
            setattr(occ, attr, value)
    # The tag must say what the transform writes, which is not always the source's range.
    occ.color_range = color.AVCOL_RANGE_JPEG if full_range else color.AVCOL_RANGE_MPEG
    if matrix is not None:  # an RGB source: tag the matrix it was converted with
        occ.colorspace = color.AVCOL_SPC_OF[matrix]


class VideoTransform:
    """Deinterlacing, rotation, crop-to-even, scaling and pixel-format conversion of frames.

    Uses one libavfilter graph (the same code as the ffmpeg command line), built on the first
    frame; frames that need nothing pass straight through.
    """

    def __init__(self, plan: VideoPlan, time_base: Fraction, full_range: bool | None = None,
                 matrix: str | None = None) -> None:
        """`full_range`: the YUV range to write (the encoder is tagged with it; None leaves it to
        libavfilter, for RGB output); `matrix`: the YUV matrix for RGB input (bt601/bt709/...)."""
        self.plan = plan
        self.time_base = time_base
        self.full_range = None if is_rgb(plan.pix_fmt) else full_range
        self.matrix = matrix
        self.graph: av.filter.Graph | None = None
        self._key: tuple | None = None
        # bwdif in the graph: from the start, or ("auto") from the first interlaced frame on.
        self.deinterlacing = plan.deinterlace in ("all", "interlaced")

    def _needs_graph(self, frame: av.VideoFrame) -> bool:
        p = self.plan
        return bool(p.rotate or p.mirror or p.crop or self.deinterlacing
                    or frame.width != p.width or frame.height != p.height
                    or frame.format.name != p.pix_fmt
                    or (self.full_range is not None
                        and color.is_full_range(frame.color_range, frame.format.name)
                        != self.full_range))

    def _build(self, frame: av.VideoFrame) -> None:
        p = self.plan
        g = av.filter.Graph()
        # Declare the frame's range and matrix so swscale reads the samples as they really are.
        src_colour = {}
        if frame.color_range:
            src_colour["range"] = str(int(frame.color_range))
        if frame.colorspace not in (None, 2):  # 2: unspecified
            src_colour["colorspace"] = str(int(frame.colorspace))
        chain = [g.add("buffer", video_size=f"{frame.width}x{frame.height}",
                       pix_fmt=str(int(frame.format)), time_base=str(self.time_base),
                       pixel_aspect="1/1", **src_colour)]
        if self.deinterlacing:
            # Same frame rate out (HandBrake's default decomb); the field order comes from each
            # frame, so mixed progressive/interlaced (PAFF, telecine edits) is handled per frame.
            deint = "all" if p.deinterlace == "all" else "interlaced"
            chain.append(g.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}"))
        # FFmpeg reports display rotation counter-clockwise; turn the pixels the same way, and
        # flip them where the display matrix mirrors too (as the ffmpeg CLI's autorotate).
        if p.rotate == 90:
            chain.append(g.add("transpose", "clock_flip" if p.mirror else "cclock"))
        elif p.rotate == 180:
            chain += [g.add("hflip")] if p.mirror else [g.add("hflip"), g.add("vflip")]
        elif p.rotate == 270:
            chain.append(g.add("transpose", "cclock_flip" if p.mirror else "clock"))
        elif p.mirror:
            chain.append(g.add("vflip"))
        if p.crop:
            chain.append(g.add("crop", f"{p.crop[0]}:{p.crop[1]}:0:0"))
        scale = f"{p.width}:{p.height}:flags=bicubic"
        # Without an explicit out_range swscale writes limited range from RGB whatever the source
        # says, and the encoder's range tag would not match the samples.
        if self.full_range is not None:
            scale += f":out_range={'full' if self.full_range else 'limited'}"
        if self.matrix and is_rgb(frame.format.name) and not is_rgb(p.pix_fmt):
            scale += f":out_color_matrix={self.matrix}"
        chain.append(g.add("scale", scale))
        chain.append(g.add("format", p.pix_fmt))
        chain.append(g.add("buffersink"))
        g.link_nodes(*chain).configure()
        self.graph = g
        self._key = self._frame_key(frame)

    def _frame_key(self, frame: av.VideoFrame) -> tuple:
        return (frame.width, frame.height, frame.format.name, frame.color_range, frame.colorspace,
                self.deinterlacing)

    def __call__(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Transform one frame (None flushes); returns the frames ready to encode."""
        if frame is None:
            return self._drain(flush=True) if self.graph else []
        if not self.deinterlacing and self.plan.deinterlace == "auto" and frame.interlaced_frame:
            self.deinterlacing = True  # the graph is (re)built with bwdif for this frame on
        if self.graph is None and not self._needs_graph(frame):
            return [frame]
        if self.graph is None or self._key != self._frame_key(frame):
            pending = self._drain(flush=True) if self.graph else []
            self._build(frame)
            assert self.graph is not None
            self.graph.push(frame)
            return pending + self._drain()
        self.graph.push(frame)
        return self._drain()

    def _drain(self, flush: bool = False) -> list[av.VideoFrame]:
        assert self.graph is not None
        if flush:
            self.graph.push(None)
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            if self.full_range is not None:  # buffersink may leave the range unspecified
                frame.color_range = color.AVCOL_RANGE_JPEG if self.full_range \
                    else color.AVCOL_RANGE_MPEG
            out.append(frame)
