"""Profiles: what one machine costs for one model, as linear fits of the input length.

A profile is what the planner knows about a machine (paper 001, Sec. II-A: "the target
network is first characterized on both devices, in order to extract two linear regression
models"). It is measured by ``splitasr profile`` (``splitasr.bench.profile``) or written by
hand for hardware that is not here (docs/planner.md has a Cortex-A53 example), and saved as
versioned JSON that the runtime reads back with :func:`load_profile`.

Every time is a :class:`Fit` ``ms = a + b * seconds`` of input audio, with the goodness of
fit (R^2 and MSE over the per-length means, as paper 001's Fig. 3 reports) and the raw
samples (mean, standard deviation and count per profiled length). Payload sizes are fits
too (``bytes = a + b * seconds``).

* per split point (:class:`PointProfile`): the model's head up to the point (the front end
  included) and its tail from the point;
* per (split point, codec) (:class:`CodecProfile`): encode and decode time and payload
  bytes; ``resume`` is the point whose tail runs after decoding (a learned codec may
  decode to a later point, e.g. DS2's ``bnf+ans`` made at ``audio`` resumes at ``proj``);
* the text decoder (:class:`TextProfile`): Whisper's cost per generated token and tokens
  per second of audio, or the CTC search time as a fit;
* ``full_ms``: the whole model on this machine (what edge-only runs, text excluded).

Loading is strict: the file is bounded in size, every field is type-checked, an unknown
field, a missing one, a non-finite number or a negative time is refused with one
:class:`ProfileError` naming the file and the field. No torch here: the edge imports this.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from splitasr.errors import SplitASRError

PROFILE_VERSION = 1
MAX_PROFILE_BYTES = 2 * 1024 * 1024  # a full Whisper profile is ~100 kB
MAX_ITEMS = 4096  # longest list a profile may hold (samples, points, codecs)
ROLES = ("edge", "cloud")
TEXT_KINDS = ("tokens", "ctc")


class ProfileError(SplitASRError):
    """A profile (or WER table) file is missing, too large, malformed or inconsistent."""


@dataclass(frozen=True)
class Sample:
    """Repeated measurements at one input length: ``mean`` and ``std`` in the fit's unit.
    ``seconds`` is the fit's x: seconds of audio (generated tokens in a text decoder's
    ``per_token_ms``)."""

    seconds: float
    mean: float
    std: float = 0.0
    n: int = 1


@dataclass(frozen=True)
class Fit:
    """``value = a + b * x``: ``x`` is seconds of input audio (tokens for a text decoder's
    per-token fit); ``value`` is ms, or bytes for payload sizes. ``r2``/``mse`` describe the
    fit over the samples' means (``None`` when it was written by hand or from one length)."""

    a: float
    b: float = 0.0
    r2: float | None = None
    mse: float | None = None
    samples: tuple[Sample, ...] = ()

    def predict(self, x: float) -> float:
        return self.a + self.b * x

    def scaled(self, factor: float) -> Fit:
        """The same fit with every value multiplied by ``factor`` (R^2 is unchanged,
        MSE scales with its square)."""
        return Fit(
            self.a * factor,
            self.b * factor,
            self.r2,
            None if self.mse is None else self.mse * factor * factor,
            tuple(Sample(s.seconds, s.mean * factor, s.std * factor, s.n) for s in self.samples),
        )


def fit_samples(samples: typing.Sequence[Sample]) -> Fit:
    """Least-squares line through the samples' means (each length weighs the same, as
    paper 001 fits the mean of each length), constrained to ``a >= 0`` and ``b >= 0`` (a
    time or a size never shrinks below zero nor with more audio; where the free line
    breaks a constraint, the best line on that boundary is taken: through the origin, or
    flat at the mean). One length gives a constant and no scores; R^2 is ``None`` when the
    means do not vary."""
    samples = tuple(sorted(samples, key=lambda s: s.seconds))
    if not samples:
        raise ValueError("a fit needs at least one sample")
    xs = [s.seconds for s in samples]
    ys = [s.mean for s in samples]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0.0:
        return Fit(max(my, 0.0), 0.0, None, None, samples)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    if b < 0:
        a, b = max(my, 0.0), 0.0
    elif a < 0:
        a, b = 0.0, max(sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs), 0.0)
    sse = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - sse / syy if syy > 0 else None
    return Fit(a, b, r2, sse / n, samples)


def summarise(values_by_length: dict[float, list[float]]) -> tuple[Sample, ...]:
    """Per-length mean, (population) standard deviation and count of raw measurements."""
    out = []
    for seconds, values in sorted(values_by_length.items()):
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
        out.append(Sample(float(seconds), mean, std, n))
    return tuple(out)


@dataclass(frozen=True)
class Machine:
    """Where the profile was measured (or what it describes, for a hand-written one).

    ``slowdown``: every time was multiplied by this factor after measuring (an emulated
    slower device, ``--slowdown F``); 1 for a real measurement."""

    description: str
    threads: int = 1
    slowdown: float = 1.0


@dataclass(frozen=True)
class PointProfile:
    """One split point; ``None``: not measured (a point only codecs resume at has no head,
    one whose codecs all resume elsewhere no tail)."""

    point: str
    head_ms: Fit | None  # waveform -> activation at this point, the front end included
    tail_ms: Fit | None  # activation at this point -> the model's output (before text decoding)


@dataclass(frozen=True)
class CodecProfile:
    point: str  # where the payload is made
    codec: str  # "<transform>+<coder>", e.g. "deepcod+ans"
    encode_ms: Fit
    decode_ms: Fit
    payload_bytes: Fit  # bytes on the wire (the codec's header included)
    resume: str | None = None  # the point the tail resumes at (None: ``point``)


@dataclass(frozen=True)
class TextProfile:
    """Text decoding time. ``kind="tokens"`` (Whisper): ``per_token_ms`` is a fit of ms
    against generated tokens (``a``: prompt and cross-attention set-up, ``b``: one step)
    and ``tokens_per_second`` the tokens per second of audio; the time for ``s`` seconds
    is ``per_token_ms.predict(tokens_per_second * s)``. ``kind="ctc"`` (DS2): ``search_ms``
    is a fit against seconds of audio."""

    kind: str
    per_token_ms: Fit | None = None
    tokens_per_second: float | None = None
    search_ms: Fit | None = None

    def predict(self, seconds: float) -> float:
        if self.kind == "tokens":
            return self.per_token_ms.predict(self.tokens_per_second * seconds)  # type: ignore[union-attr]
        return self.search_ms.predict(seconds)  # type: ignore[union-attr]

    def as_fit(self) -> Fit:
        """The prediction as one fit in seconds of audio (what the planner precomputes)."""
        if self.kind == "tokens":
            f, k = self.per_token_ms, self.tokens_per_second
            return Fit(f.a, f.b * k)  # type: ignore[union-attr,operator]
        return Fit(self.search_ms.a, self.search_ms.b)  # type: ignore[union-attr]

    def scaled(self, factor: float) -> TextProfile:
        return TextProfile(
            self.kind,
            None if self.per_token_ms is None else self.per_token_ms.scaled(factor),
            self.tokens_per_second,
            None if self.search_ms is None else self.search_ms.scaled(factor),
        )


@dataclass(frozen=True)
class Profile:
    """One machine running one model in one role (``edge`` or ``cloud``).

    ``lengths``: the input lengths (s) that were measured; predictions outside
    ``[min, max]`` are extrapolations of the fits. ``source``: the command (or author) that
    made it. An edge profile is used for heads, encoders and edge-only; a cloud profile for
    decoders, tails and text; both hold the same kinds of fields."""

    role: str
    model: str
    machine: Machine
    full_ms: Fit
    text: TextProfile
    points: tuple[PointProfile, ...] = ()
    codecs: tuple[CodecProfile, ...] = ()
    lengths: tuple[float, ...] = ()
    source: str = ""
    version: int = PROFILE_VERSION

    def point(self, name: str) -> PointProfile | None:
        return next((p for p in self.points if p.point == name), None)

    def codec(self, point: str, codec: str) -> CodecProfile | None:
        return next((c for c in self.codecs if c.point == point and c.codec == codec), None)

    def slowed(self, factor: float) -> Profile:
        """An emulated slower machine: every time times ``factor`` (bytes unchanged)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ProfileError(f"slowdown factor must be a positive number, got {factor}")
        return dataclasses.replace(
            self,
            machine=dataclasses.replace(self.machine, slowdown=self.machine.slowdown * factor),
            full_ms=self.full_ms.scaled(factor),
            text=self.text.scaled(factor),
            points=tuple(
                PointProfile(
                    p.point,
                    None if p.head_ms is None else p.head_ms.scaled(factor),
                    None if p.tail_ms is None else p.tail_ms.scaled(factor),
                )
                for p in self.points
            ),
            codecs=tuple(
                dataclasses.replace(
                    c, encode_ms=c.encode_ms.scaled(factor), decode_ms=c.decode_ms.scaled(factor)
                )
                for c in self.codecs
            ),
        )

    def to_dict(self) -> dict:
        return _drop_none(dataclasses.asdict(self))


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list | tuple):
        return [_drop_none(v) for v in x]
    return x


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` as indented JSON (checked first: what is saved loads back)."""
    check_profile(profile, str(path))
    Path(path).write_text(json.dumps(profile.to_dict(), indent=1) + "\n")


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by :func:`save_profile` or by hand.

    Raises:
        ProfileError: one line naming the file and the field: missing or unreadable file,
            over ``MAX_PROFILE_BYTES``, not JSON, another version, an unknown or missing
            field, a wrong type, a non-finite or negative number, an unknown role.
    """
    data = read_json(path, MAX_PROFILE_BYTES)
    name = str(path)
    if not isinstance(data, dict):
        raise ProfileError(f"{name}: a profile is a JSON object")
    if data.get("version") != PROFILE_VERSION:
        raise ProfileError(
            f"{name}: profile version {data.get('version')!r}; this splitasr reads version {PROFILE_VERSION}"
        )
    profile = from_dict(Profile, data, name)
    check_profile(profile, name)
    return profile


def read_json(path: str | Path, max_bytes: int):
    """JSON from a file of at most ``max_bytes`` (checked before reading), or ProfileError."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ProfileError(f"{p}: {size} bytes, more than the {max_bytes} a profile may have")
        with p.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ProfileError(f"{p}: not valid JSON ({str(exc).splitlines()[0]})") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a profile may hold")


def from_dict(cls, data, where: str):
    """Build dataclass ``cls`` from parsed JSON, strictly: unknown and missing fields,
    wrong types, lists over ``MAX_ITEMS`` and non-finite floats raise ProfileError."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProfileError(
            f"{where}: unknown field {unknown[0]!r} in {cls.__name__} (fields: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProfileError(f"{where}: {cls.__name__} needs field {name!r}")
            continue
        kwargs[name] = _value(hints[name], data[name], f"{where}: {cls.__name__}.{name}")
    return cls(**kwargs)


def _value(tp, v, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, v, where)
    if origin is tuple:
        if not isinstance(v, list):
            raise ProfileError(f"{where}: expected a list, got {type(v).__name__}")
        if len(v) > MAX_ITEMS:
            raise ProfileError(f"{where}: {len(v)} items, more than {MAX_ITEMS}")
        inner = typing.get_args(tp)[0]
        return tuple(_value(inner, x, f"{where}[{i}]") for i, x in enumerate(v))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, where)
    if tp is bool:
        if not isinstance(v, bool):
            raise ProfileError(f"{where}: expected true or false, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ProfileError(f"{where}: expected a finite number, got {v!r}")
        return float(v)
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProfileError(f"{where}: expected an integer, got {v!r}")
        return v
    if tp is str:
        if not isinstance(v, str) or len(v) > 1000:
            raise ProfileError(
                f"{where}: expected a string (at most 1000 characters), got {type(v).__name__}"
            )
        return v
    raise ProfileError(f"{where}: unsupported type {tp}")  # pragma: no cover - a schema bug


def _check_fit(fit: Fit, where: str, floor: float = 0.0) -> None:
    """A fit must not predict a negative value over the range it is used on (0..max s)."""
    for s in fit.samples:
        if s.seconds < 0 or s.std < 0 or s.n < 1:
            raise ProfileError(f"{where}: sample at {s.seconds} s has a negative length or std, or n < 1")
    if fit.a < floor or fit.a + fit.b * 600.0 < floor:
        raise ProfileError(f"{where}: a + b * seconds must stay >= 0 for 0..600 s (a={fit.a}, b={fit.b})")


def check_profile(p: Profile, name: str) -> None:
    """Consistency beyond types: role, version, non-negative fits, known points, the text
    decoder's kind and its fields."""
    if p.version != PROFILE_VERSION:
        raise ProfileError(f"{name}: profile version {p.version}, expected {PROFILE_VERSION}")
    if p.role not in ROLES:
        raise ProfileError(f"{name}: role {p.role!r}; choose from {', '.join(ROLES)}")
    if not p.model:
        raise ProfileError(f"{name}: model must be named")
    if p.machine.threads < 0 or not p.machine.slowdown > 0:
        raise ProfileError(f"{name}: machine threads must be >= 0 and slowdown > 0")
    _check_fit(p.full_ms, f"{name}: full_ms")
    t = p.text
    if t.kind not in TEXT_KINDS:
        raise ProfileError(f"{name}: text.kind {t.kind!r}; choose from {', '.join(TEXT_KINDS)}")
    if t.kind == "tokens":
        if t.per_token_ms is None or t.tokens_per_second is None or t.tokens_per_second < 0:
            raise ProfileError(f"{name}: text kind 'tokens' needs per_token_ms and tokens_per_second >= 0")
        _check_fit(t.per_token_ms, f"{name}: text.per_token_ms")
    else:
        if t.search_ms is None:
            raise ProfileError(f"{name}: text kind 'ctc' needs search_ms")
        _check_fit(t.search_ms, f"{name}: text.search_ms")
    names = [pp.point for pp in p.points]
    if len(set(names)) != len(names):
        raise ProfileError(f"{name}: split point listed twice in points")
    for pp in p.points:
        for label in ("head_ms", "tail_ms"):
            if getattr(pp, label) is not None:
                _check_fit(getattr(pp, label), f"{name}: point {pp.point} {label}")
    seen = set()
    for c in p.codecs:
        if (c.point, c.codec) in seen:
            raise ProfileError(f"{name}: codec {c.codec} at {c.point} listed twice")
        seen.add((c.point, c.codec))
        for pt, label in ((c.point, "head_ms"), (c.resume or c.point, "tail_ms")):
            pp = p.point(pt)
            if pp is None or getattr(pp, label) is None:
                raise ProfileError(
                    f"{name}: codec {c.codec} at {c.point} needs {label} of point {pt!r} in points"
                )
        for label in ("encode_ms", "decode_ms", "payload_bytes"):
            _check_fit(getattr(c, label), f"{name}: codec {c.codec} at {c.point} {label}")
    if any(not (math.isfinite(x) and x > 0) for x in p.lengths):
        raise ProfileError(f"{name}: lengths must be positive seconds")


# ------------------------------------------------------------------ WER tables


WER_TABLE_VERSION = 1
MAX_WER_TABLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class WerRow:
    point: str  # where the payload is made ("audio" for cloud-only codecs)
    codec: str
    dwer: float  # WER points over the unsplit model (negative: better)
    kbps: float | None = None  # measured rate, for the reader


@dataclass(frozen=True)
class WerTable:
    """The accuracy cost of each (split point, codec) of one model, from ``splitasr bench
    tradeoff`` (``source`` names the command, ``test_set`` the utterances). Codecs in
    ``lossless`` cost 0 points at every point (the tail sees the same numbers)."""

    model: str
    source: str
    test_set: str
    unsplit_wer: float  # %, the whole model on ``test_set``
    rows: tuple[WerRow, ...] = ()
    lossless: tuple[str, ...] = ()
    note: str = ""
    version: int = WER_TABLE_VERSION

    def dwer(self, point: str, codec: str) -> float | None:
        """Points over unsplit for ``codec`` at ``point``; ``None`` when never measured."""
        if codec in self.lossless:
            return 0.0
        for r in self.rows:
            if r.point == point and r.codec == codec:
                return r.dwer
        return None


DATA_DIR = Path(__file__).resolve().parent / "data"


def load_wer_table(path_or_model: str | Path) -> WerTable:
    """A WER table file, or the shipped one of a model (``splitasr/planner/data/wer-<model>.json``)."""
    path = Path(path_or_model)
    if not path.suffix == ".json":
        path = DATA_DIR / f"wer-{path_or_model}.json"
        if not path.is_file():
            shipped = sorted(p.stem[4:] for p in DATA_DIR.glob("wer-*.json"))
            raise ProfileError(
                f"no shipped WER table for model {path_or_model!r} (shipped: {', '.join(shipped)})"
            )
    data = read_json(path, MAX_WER_TABLE_BYTES)
    if not isinstance(data, dict) or data.get("version") != WER_TABLE_VERSION:
        raise ProfileError(f"{path}: not a version-{WER_TABLE_VERSION} WER table")
    return from_dict(WerTable, data, str(path))


__all__ = [
    "CodecProfile",
    "Fit",
    "Machine",
    "PROFILE_VERSION",
    "PointProfile",
    "Profile",
    "ProfileError",
    "Sample",
    "TextProfile",
    "WerRow",
    "WerTable",
    "check_profile",
    "fit_samples",
    "load_profile",
    "load_wer_table",
    "save_profile",
    "summarise",
]
