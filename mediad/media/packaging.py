"""HLS and DASH sets: how FFmpeg's segmenters are set up (`muxer_setup`), and the set after
them: read back, verify, measure, and finish the manifest.

Players pick a variant by the manifest's numbers and refuse wrong ones silently, so the bit
rates written are the ones measured from the segments; every segment must start with a
keyframe and last no longer than the target allows. What FFmpeg's muxers write is read with
`m3u8` (HLS) and ElementTree (DASH), and only the measured numbers are changed.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mediad import stopping
from mediad.errors import MediadError, Reason
from mediad.media.job_plan import JobPlan

# A segment may run past its target by this much (the last GOP before a cut).
SEGMENT_SLACK_S = 0.5
_MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
_CODECS = re.compile(r"^(avc1\.[0-9a-fA-F]{6}|hvc1\.[\w.]+|av01\.[\w.]+)$")


@dataclass(frozen=True)
class SegmentedTrack:
    """One rendition as written: its files, and what they measure."""

    name: str
    kind: str  # video | audio
    playlist: str  # its media playlist (HLS) or the manifest (DASH), relative to the folder
    files: list[str]  # init first, then the segments, relative to the folder
    size: int
    duration: float
    frames: int
    codec: str | None
    width: int | None
    height: int | None
    average_bit_rate: int
    peak_bit_rate: int  # the highest segment's
    segment_durations: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def _read_segment(init: bytes, segment: Path) -> tuple[bool, int, float, str, int, int]:
    """(starts with a keyframe, frames or packets, duration, codec, width, height) of one
    fMP4 segment, read with its init section."""
    with av.open(io.BytesIO(init + segment.read_bytes()), format="mp4") as c:
        s = c.streams[0]
        cc = s.codec_context
        first_key, count, start, end = None, 0, None, None
        for p in c.demux(s):
            stopping.check()
            if not p.size or p.pts is None:
                continue
            if first_key is None:
                first_key = bool(p.is_keyframe)
            count += 1
            t0 = float(p.pts * p.time_base)
            t1 = t0 + float((p.duration or 0) * p.time_base)
            start = t0 if start is None else min(start, t0)
            end = t1 if end is None else max(end, t1)
        codec = cc.codec.canonical_name if cc.codec is not None else cc.name
        width = getattr(cc, "width", 0) or 0
        height = getattr(cc, "height", 0) or 0
    return bool(first_key), count, (end or 0.0) - (start or 0.0), codec, width, height


def read_track(folder: Path, name: str, kind: str, playlist: str, init: str,
               segments: list[str], target: float) -> SegmentedTrack:
    """Read every segment of one rendition back; a segment that is not a keyframe start
    or does not read is an error (the set is refused)."""
    init_bytes = (folder / init).read_bytes()
    total, frames, durations = (folder / init).stat().st_size, 0, []
    codec, width, height = None, None, None
    sizes: list[int] = []
    for seg in segments:
        path = folder / seg
        try:
            key, count, duration, codec, width, height = _read_segment(init_bytes, path)
        except (av.FFmpegError, OSError) as e:
            raise MediadError(f"{path}: segment does not read back: {e}", reason=Reason.CORRUPT) from None
        if kind == "video" and not key:
            raise MediadError(f"{path}: segment does not start with a keyframe",
                              reason=Reason.CORRUPT)
        size = path.stat().st_size
        total += size
        frames += count
        durations.append(duration)
        sizes.append(size)
    duration = sum(durations)
    average = int(total * 8 / duration) if duration else 0
    peak = _peak_rate(sizes, durations, target)
    # The init section counts into the average only: a peak under it would read as a lie.
    return SegmentedTrack(name, kind, playlist, [init, *segments], total, duration, frames,
                          codec, width, height, average, max(average, peak), durations)


def _peak_rate(sizes: list[int], durations: list[float], target: float) -> int:
    """Apple's peak segment bit rate: the highest rate of any run of consecutive segments
    lasting 0.5 to 1.5 x the target (a last segment of one audio frame alone would read as
    a huge rate); the whole when nothing qualifies (a set shorter than half a segment)."""
    best = 0.0
    for i in range(len(sizes)):
        size, seconds = 0, 0.0
        for j in range(i, len(sizes)):
            size, seconds = size + sizes[j], seconds + durations[j]
            if seconds >= 0.5 * target:
                if seconds <= 1.5 * target:
                    best = max(best, size * 8 / seconds)
                break
    if best == 0.0 and sum(durations) > 0:
        best = sum(sizes) * 8 / sum(durations)
    return int(best)


def check_segments(track: SegmentedTrack, target: float) -> None:
    """No segment (the last aside, which may be short) longer than the target allows."""
    for i, d in enumerate(track.segment_durations):
        if d > target + SEGMENT_SLACK_S:
            raise MediadError(f"{track.name}: segment {i} lasts {d:.2f}s, over the "
                              f"{target:g}s target", reason=Reason.CORRUPT)


def finish_hls(folder: Path, plan: JobPlan, fps: Fraction | float | None,
               ) -> list[SegmentedTrack]:
    """Read the HLS set back, then rewrite master.m3u8 with measured BANDWIDTH and
    AVERAGE-BANDWIDTH (video plus its audio group), and FRAME-RATE."""
    import m3u8

    master_path = folder / str(plan.manifest)
    master = m3u8.load(str(master_path))
    if not master.playlists:  # FFmpeg's segmenter cut nothing (a source of a frame or two)
        raise MediadError(f"{plan.base.input}: too short to package: the segmenter wrote no "
                          "variant playlist", reason=Reason.UNSUPPORTED)
    tracks: dict[str, SegmentedTrack] = {}
    _finish_subtitles(folder, master, plan)
    for uri, kind in [(m.uri, "audio") for m in master.media if m.uri and m.type == "AUDIO"] + \
            [(p.uri, "video") for p in master.playlists]:
        media = m3u8.load(str(folder / uri))
        base = Path(uri).parent
        if not media.segment_map:
            raise MediadError(f"{folder / uri}: no fMP4 init section", reason=Reason.CORRUPT)
        tracks[uri] = read_track(folder, str(base), kind, uri,
                                 str(base / media.segment_map[0].uri),
                                 [str(base / s.uri) for s in media.segments],
                                 plan.segment_seconds)
    audio = [t for t in tracks.values() if t.kind == "audio"]
    audio_avg = max((t.average_bit_rate for t in audio), default=0)
    audio_peak = max((t.peak_bit_rate for t in audio), default=0)
    for p in master.playlists:
        video = tracks[p.uri]
        codecs = (p.stream_info.codecs or "").split(",")
        if not codecs or not _CODECS.match(codecs[0]):
            raise MediadError(f"{master_path}: CODECS {p.stream_info.codecs!r} for {p.uri} is "
                              "not a codec string players read", reason=Reason.CORRUPT)
        p.stream_info.bandwidth = video.peak_bit_rate + audio_peak
        p.stream_info.average_bandwidth = video.average_bit_rate + audio_avg
        if fps:
            p.stream_info.frame_rate = round(float(fps), 3)
    master.dump(str(master_path))
    return list(tracks.values())


def _finish_subtitles(folder: Path, master: Any, plan: JobPlan) -> None:
    """Check each WebVTT rendition (its playlist lists segments that are there and are
    WebVTT) and give the group what players show: a name and language each, the first the
    default, every variant naming the group."""
    import m3u8

    subs = [m for m in master.media if m.type == "SUBTITLES"]
    if len(subs) != len(plan.subtitles):
        raise MediadError(f"{folder / str(plan.manifest)}: {len(subs)} subtitle renditions, "
                          f"{len(plan.subtitles)} planned", reason=Reason.CORRUPT)
    names: list[str] = []
    cues: list[int] = []
    for k, (media, s) in enumerate(zip(subs, plan.subtitles, strict=True)):
        playlist = m3u8.load(str(folder / media.uri))
        base = Path(media.uri).parent
        cues.append(_every_cue_in_its_segments(
            [(folder / base / s.uri, float(s.duration)) for s in playlist.segments]))
        # Names unique within the group (RFC 8216 4.3.4.1.1): a second English track is -2
        name = f"subtitles-{s.language}" if s.language else f"subtitles-{k + 1}"
        names.append(name if name not in names else f"{name}-{k + 1}")
        media.name = names[-1]
        media.language = s.language
        media.autoselect = "YES"
    # The default: the first track with cues (the plan puts the source's default track first);
    # a track that shows nothing is never the one players pick
    default = next((k for k, n in enumerate(cues) if n), 0)
    for k, media in enumerate(subs):
        media.default = "YES" if k == default else "NO"
    for p in master.playlists:
        p.stream_info.subtitles = "subs" if subs else None


def _every_cue_in_its_segments(segments: list[tuple[Path, float]]) -> int:
    """Rewrite a WebVTT track's segments so that each holds every cue shown during it (RFC 8216
    3.5: FFmpeg's segmenter puts a cue only in the segment it starts in, so a player that
    starts or seeks into the next never shows it), none past the track's end. Returns the
    number of cues."""
    from webvtt import WebVTT
    from webvtt.errors import MalformedFileError

    cues: dict[tuple[str, str, str], Any] = {}  # each cue once, by its times and text
    for path, _ in segments:
        try:
            for c in WebVTT.read(str(path)).captions:
                cues.setdefault((c.start, c.end, c.raw_text), c)
        except (OSError, MalformedFileError) as e:
            raise MediadError(f"{path}: not a WebVTT segment ({e})", reason=Reason.CORRUPT) from None
    at = 0.0
    for path, duration in segments:
        lo, hi = at * 1000, (at + duration) * 1000
        at += duration
        shown = [c for c in cues.values()
                 if c.start_time.in_milliseconds() < hi and c.end_time.in_milliseconds() > lo]
        WebVTT(captions=sorted(shown, key=lambda c: c.start_time.in_milliseconds())).save(
            str(path))
    return len(cues)


def finish_dash(folder: Path, plan: JobPlan, fps: Fraction | float | None = None,
                ) -> list[SegmentedTrack]:
    """Read the DASH set back, the segments each Representation's SegmentTimeline lists
    (`_listed_segments`), and write each Representation's measured peak as its bandwidth,
    and the video's highest frame rate `fps` (the muxer writes the average)."""
    ET.register_namespace("", _MPD_NS)
    mpd_path = folder / plan.manifest
    tree = ET.parse(mpd_path)
    ns = {"d": _MPD_NS}
    tracks = []
    for aset in tree.getroot().iterfind(".//d:AdaptationSet", ns):
        kind = "audio" if aset.get("contentType") == "audio" else "video"
        if kind == "video" and fps and aset.get("frameRate"):
            rate = Fraction(fps).limit_denominator(1001)
            aset.set("frameRate", f"{rate.numerator}/{rate.denominator}"
                     if rate.denominator > 1 else str(rate.numerator))
        for rep in aset.iterfind("d:Representation", ns):
            rid = rep.get("id", "")
            template = rep.find("d:SegmentTemplate", ns)
            if template is None:
                template = aset.find("d:SegmentTemplate", ns)
            if template is None:
                raise MediadError(f"{mpd_path}: representation {rid} has no SegmentTemplate",
                                  reason=Reason.CORRUPT)
            init = template.get("initialization", "").replace("$RepresentationID$", rid)
            segments = _listed_segments(folder, mpd_path, rid, template, ns)
            # Representation ids are stream indices: the audio tracks first, then each rendition.
            audios = len(plan.audio)
            name = plan.audio_names[int(rid)] if int(rid) < audios else \
                plan.outputs[int(rid) - audios].name
            track = read_track(folder, name, kind, str(plan.manifest), init, segments,
                               plan.segment_seconds)
            rep.set("bandwidth", str(track.peak_bit_rate))
            if kind == "video":  # the muxer writes the stream's SAR (PyAV leaves it 1:1)
                sar = next(r.video.sample_aspect_ratio for r in plan.outputs if r.name == name)
                rep.set("sar", sar.replace("/", ":"))
            tracks.append(track)
    top = plan.outputs[0].video
    num, _, den = top.sample_aspect_ratio.partition("/")
    par = Fraction(top.width * int(num), top.height * int(den))
    _join_video_sets(tree.getroot().find("d:Period", ns), ns,
                     f"{par.numerator}:{par.denominator}")
    tree.write(mpd_path, xml_declaration=True, encoding="utf-8")
    return tracks


def _listed_segments(folder: Path, mpd_path: Path, rid: str, template: ET.Element,
                     ns: dict[str, str]) -> list[str]:
    """The segments a Representation's SegmentTimeline lists, by name (startNumber on): each
    must be in the folder, and none of its chunks left out. Players fetch what the timeline
    lists (a template of one `duration` makes them derive a count from the presentation's
    duration instead, which an audio track's last AAC frame past the video's end raised by
    one for every track: a video chunk that was never written)."""
    timeline = template.find("d:SegmentTimeline", ns)
    if timeline is None:
        raise MediadError(f"{mpd_path}: representation {rid} has no SegmentTimeline",
                          reason=Reason.CORRUPT)
    count = 0
    for s in timeline.iterfind("d:S", ns):
        repeat = int(s.get("r", "0"))
        if repeat < 0:  # "until the next S or the period's end": never in a static set's
            raise MediadError(f"{mpd_path}: representation {rid}: an open-ended S (r={repeat})",
                              reason=Reason.CORRUPT)
        count += 1 + repeat
    pattern = template.get("media", "").replace("$RepresentationID$", rid)
    number = re.search(r"\$Number(%0\d+d)?\$", pattern)
    if number is None or "$Time$" in pattern:
        raise MediadError(f"{mpd_path}: representation {rid}: segment names {pattern!r} are not "
                          "by $Number$", reason=Reason.CORRUPT)
    start = int(template.get("startNumber", "1"))
    form = number.group(1) or "%d"
    listed = [pattern[:number.start()] + form % n + pattern[number.end():]
              for n in range(start, start + count)]
    missing = [name for name in listed if not (folder / name).is_file()]
    if missing:
        raise MediadError(f"{mpd_path}: representation {rid} lists {', '.join(missing)}, not "
                          "in the set", reason=Reason.CORRUPT)
    unlisted = sorted({p.name for p in folder.glob(f"{pattern[:number.start()]}*.m4s")}
                      - set(listed))
    if unlisted:
        raise MediadError(f"{mpd_path}: representation {rid} does not list {', '.join(unlisted)}",
                          reason=Reason.CORRUPT)
    return listed


def _join_video_sets(period: ET.Element | None, ns: dict[str, str], par: str) -> None:
    """Move every video Representation into the first video AdaptationSet (the muxer wrote
    one set each): one set is what a player switches within. The set gets the display
    aspect `par`; each Representation keeps its own size and sar."""
    if period is None:
        return
    sets = [a for a in period.iterfind("d:AdaptationSet", ns) if a.get("contentType") == "video"]
    if not sets:
        return
    joined = sets[0]
    for other in sets[1:]:
        for rep in other.iterfind("d:Representation", ns):
            joined.append(rep)
        period.remove(other)
    reps = list(joined.iterfind("d:Representation", ns))
    joined.set("maxWidth", str(max(int(r.get("width", 0)) for r in reps)))
    joined.set("maxHeight", str(max(int(r.get("height", 0)) for r in reps)))
    joined.attrib.pop("bitstreamSwitching", None)  # each Representation has its own init
    joined.set("par", par)  # the display aspect (the muxer wrote the pixels' w:h)


def muxer_setup(plan: JobPlan, folder: Path) -> tuple[Path, str, dict[str, str]]:
    """(the path the muxer opens, its format, its options) for the plan's package."""
    seg = f"{plan.segment_seconds:g}"
    if plan.package == "hls":  # audio tracks first: streams 0..A-1, one audio group
        variants = [f"a:{k},agroup:aud,name:{name}" + (",default:yes" if k == 0 else "")
                    + (f",language:{a.language}" if a.language else "")
                    for k, (a, name) in enumerate(zip(plan.audio, plan.audio_names, strict=True))]
        # Subtitle track k rides with video variant k (the segmenter cuts one WebVTT track per
        # variant); every variant then names the one group (see packaging.finish_hls).
        variants += [f"v:{i},name:{r.name}" + (",agroup:aud" if plan.audio else "")
                     + (f",s:{i},sgroup:subs" if i < len(plan.subtitles) else "")
                     + (f",language:{plan.subtitles[i].language}"
                        if i < len(plan.subtitles) and plan.subtitles[i].language else "")
                     for i, r in enumerate(plan.outputs)]
        return folder / "%v" / "index.m3u8", "hls", {
            "hls_time": seg, "hls_playlist_type": "vod", "hls_list_size": "0",
            "hls_segment_type": "fmp4", "hls_fmp4_init_filename": "init.mp4",
            "hls_segment_filename": str(folder / "%v" / "seg%05d.m4s"),
            "hls_flags": "independent_segments", "master_pl_name": plan.manifest,
            "var_stream_map": " ".join(variants)}
    # One adaptation set per video stream: FFmpeg's muxer refuses a set whose sizes differ in
    # w:h (426x240 beside 640x360), which a ladder of even sizes always has. finish_dash joins
    # them into one set, as players need to switch between them. Audio tracks are streams
    # 0..A-1, a set each (a language each). Each Representation's SegmentTemplate holds a
    # SegmentTimeline, the times and durations of the segments really written: with a
    # template's `duration` alone players derive the count from the presentation's duration,
    # and the audio's last AAC frame past the video's end made them ask for a video chunk
    # that does not exist (ffmpeg, dash.js and Shaka alike).
    first, videos = len(plan.audio), len(plan.outputs)
    sets = [f"id={i},streams={first + i}" for i in range(videos)]
    sets += [f"id={videos + k},streams={k}" for k in range(len(plan.audio))]
    return folder / plan.manifest, "dash", {
        "seg_duration": seg, "use_template": "1", "use_timeline": "1",
        "adaptation_sets": " ".join(sets), "init_seg_name": "init-$RepresentationID$.m4s",
        "media_seg_name": "chunk-$RepresentationID$-$Number%05d$.m4s"}
