"""Golden bitstreams: payloads stored in tests/codecs/golden/ decode to stored values, and
compressing the stored input reproduces them byte for byte (CompressAI-style checks that
the format and the shipped state do not drift).

Regenerate, only on a deliberate format change (then bump ``FORMAT_VERSION``):

    PYTHONPATH=. python -m tests.codecs.test_golden
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from splitasr.codecs import get_codec
from splitasr.codecs.base import read_header
from splitasr.codecs.state import shipped_state_dir
from tests.codecs.synthetic import laplacian_activations

GOLDEN = Path(__file__).parent / "golden"
POINT = 5  # 'proj' is split point 5 of ds2
CASES = {  # codec -> uses the shipped ds2/proj state
    "q8+ans": True,
    "f32+pack": False,
    "dct50+huffman": True,
    "deepcod+ans": True,
}


def _codec(name: str):
    return get_codec(name, shipped_state_dir("ds2", "proj") if CASES[name] else None)


def _input() -> torch.Tensor:
    return torch.from_numpy(np.load(GOLDEN / "input-proj.npy"))


def _file(name: str, ext: str) -> Path:
    return GOLDEN / f"{name.replace('+', '-')}.{ext}"


@pytest.mark.parametrize("name", CASES)
def test_golden_payloads_decode_to_their_stored_values(name):
    payload = _file(name, "bin").read_bytes()
    header = read_header(payload)
    assert (header.codec, header.point, header.shape) == (name, POINT, (1, 8, 256))
    y, lens = _codec(name).decompress(payload)
    expected = np.load(_file(name, "npy"))
    if name.startswith("deepcod"):  # torch convolutions: equal up to float rounding across CPUs
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)
    else:
        assert np.array_equal(y.numpy().view(np.uint32), expected.view(np.uint32))
    assert lens.tolist() == [8]


@pytest.mark.parametrize("name", CASES)
def test_compressing_the_golden_input_reproduces_the_payload_byte_for_byte(name):
    assert _codec(name).compress(_input(), point=POINT) == _file(name, "bin").read_bytes()


def regenerate() -> None:
    GOLDEN.mkdir(exist_ok=True)
    np.save(GOLDEN / "input-proj.npy", laplacian_activations(1, 8, 256, seed=42)[0][None])
    for name in CASES:
        payload = _codec(name).compress(_input(), point=POINT)
        _file(name, "bin").write_bytes(payload)
        np.save(_file(name, "npy"), _codec(name).decompress(payload)[0].numpy())
        print(f"{name}: {len(payload)} bytes")


if __name__ == "__main__":
    regenerate()
