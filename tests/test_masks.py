"""Label Studio's brush RLE: its own bit-packed format, not COCO's; a mask survives the round trip exactly."""

import numpy as np
import pytest

from lifecycle.masks import from_brush_rle, to_brush_rle

# 4 values, 8-bit words (7), run-length fields of 3, 4, 8 and 16 bits (each stored minus one)
HEADER = f"{4:032b}" + "00111" + "".join(["0010", "0011", "0111", "1111"])


def as_bytes(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_brush_rle_is_label_studio_bit_packing():
    """One painted pixel: the header (4 values, 8-bit words, run fields 3/4/8/16 bits) and one repeat chunk of 4
    values of 255, padded to whole bytes, as Label Studio's rle-pack stream lays them out."""
    expected = as_bytes(HEADER + "".join(["1", "00", "011", "11111111"]))  # repeat, field 0, count 4, 255
    assert to_brush_rle(np.ones((1, 1), bool)) == expected
    assert from_brush_rle(expected, 1, 1).tolist() == [[True]]


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 64), (180, 200)])
def test_mask_to_label_studio_rle_and_back_is_identical(shape):
    rng = np.random.default_rng(sum(shape))
    speckle = rng.random(shape) > 0.5
    blobs = np.zeros(shape, bool)
    blobs[shape[0] // 4 : shape[0] // 2 + 1, : shape[1] // 3 + 1] = True  # long runs: 180x200x4 needs split chunks
    for mask in (speckle, blobs, np.zeros(shape, bool), np.ones(shape, bool)):
        decoded = from_brush_rle(to_brush_rle(mask), *shape)
        assert decoded.dtype == bool and np.array_equal(decoded, mask)


def test_literal_chunks_and_malformed_streams():
    """Label Studio may write literal chunks (flag 0): read them; a stream of the wrong size or cut short is refused."""
    literal = as_bytes(HEADER + "".join(["0", "00", "011", "11111111" * 2, "00000000" * 2]))  # 255 255 0 0
    assert from_brush_rle(literal, 1, 1).tolist() == [[False]]  # alpha (the 4th value) is 0
    rle = to_brush_rle(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="not the 4x5x4"):
        from_brush_rle(rle, 4, 5)
    with pytest.raises(ValueError, match="ends before"):
        from_brush_rle(rle[:6], 4, 4)
    with pytest.raises(ValueError, match="byte values"):
        from_brush_rle("abc", 4, 4)
