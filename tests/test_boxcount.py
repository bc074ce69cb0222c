import numpy as np
import pytest

from chaosgd.boxcount import box_counts, box_dimension, boundary_pixels

LOG43 = np.log(4) / np.log(3)


def carpet(level: int) -> np.ndarray:
    """Sierpinski carpet on 3^level pixels: dimension ln 8 / ln 3."""
    image = np.ones((1, 1), dtype=bool)
    for _ in range(level):
        hole = np.zeros_like(image)
        image = np.block([[image, image, image], [image, hole, image], [image, image, image]])
    return image


def cantor_dust(level: int) -> np.ndarray:
    """Product of two middle-third Cantor sets on 3^level pixels: dimension 2 ln 2 / ln 3 = ln 4 / ln 3."""
    line = np.ones(1, dtype=bool)
    for _ in range(level):
        line = np.concatenate([line, np.zeros_like(line), line])
    return np.outer(line, line)


def koch_curve(level: int, size: int) -> np.ndarray:
    """The Koch curve from (0, 0) to (1, 0), its vertices joined by densely sampled segments on size^2 pixels."""
    points = np.array([0.0 + 0j, 1.0 + 0j])
    turn = np.exp(1j * np.pi / 3)
    for _ in range(level):
        a, b = points[:-1], points[1:]
        d = (b - a) / 3
        new = np.stack([a, a + d, a + d + d * turn, a + 2 * d], axis=1).ravel()
        points = np.append(new, points[-1])
    t = np.linspace(0, 1, 8)[:-1]
    dense = (points[:-1, None] + (points[1:] - points[:-1])[:, None] * t).ravel()
    image = np.zeros((size, size), dtype=bool)
    col = np.clip((dense.real * (size - 1)).round().astype(int), 0, size - 1)
    row = np.clip((dense.imag * (size - 1)).round().astype(int), 0, size - 1)
    image[row, col] = True
    return image


def test_line_has_dimension_one_and_a_square_two():
    line = np.zeros((256, 256), dtype=bool)
    line[100, :] = True
    d = box_dimension(line)
    assert d.dimension == pytest.approx(1.0, abs=0.02) and d.low <= 1.0 + 1e-9 and d.high >= 1.0 - 0.05
    diagonal = np.eye(256, dtype=bool)
    assert box_dimension(diagonal).dimension == pytest.approx(1.0, abs=1e-9)
    square = np.ones((256, 256), dtype=bool)
    assert box_dimension(square).dimension == pytest.approx(2.0, abs=1e-9)


def test_counts_of_a_filled_square_are_its_area_in_boxes():
    sizes, counts = box_counts(np.ones((64, 64), dtype=bool))
    np.testing.assert_array_equal(sizes, [1, 2, 4, 8, 16, 32, 64])
    np.testing.assert_array_equal(counts, (64 // sizes) ** 2)


def test_boundary_of_a_filled_region_is_a_curve():
    yy, xx = np.mgrid[:512, :512]
    disc = (yy - 256) ** 2 + (xx - 250) ** 2 < 180 ** 2
    assert box_dimension(boundary_pixels(disc)).dimension == pytest.approx(1.0, abs=0.03)
    square = np.zeros((512, 512), dtype=bool)
    square[100:400, 50:300] = True
    assert box_dimension(boundary_pixels(square)).dimension == pytest.approx(1.0, abs=0.03)
    tilted = yy < 0.2 * xx + 200
    assert box_dimension(boundary_pixels(tilted)).dimension == pytest.approx(1.0, abs=0.03)
    # Both sides of the edge make a band two pixels wide, which inflates the small boxes' counts.
    assert box_dimension(boundary_pixels(disc, both_sides=True)).dimension > 1.05


@pytest.mark.parametrize("image, expected, tolerance", [
    (carpet(6), np.log(8) / np.log(3), 0.06),
    (cantor_dust(6), LOG43, 0.08),
    (koch_curve(7, 2048), LOG43, 0.06),
], ids=["sierpinski-carpet", "cantor-dust", "koch-curve"])
def test_sets_of_known_dimension(image, expected, tolerance):
    d = box_dimension(image)
    assert d.dimension == pytest.approx(expected, abs=tolerance)
    assert d.low - tolerance <= expected <= d.high + tolerance
    assert d.local.size == d.sizes.size - 1


def test_boundary_pixels_are_the_true_side_of_an_edge_or_both():
    image = np.zeros((4, 5), dtype=bool)
    image[:, 3:] = True
    expected = np.zeros((4, 5), dtype=bool)
    expected[:, 3] = True
    np.testing.assert_array_equal(boundary_pixels(image), expected)
    expected[:, 2] = True
    np.testing.assert_array_equal(boundary_pixels(image, both_sides=True), expected)
    assert not boundary_pixels(np.ones((3, 3), dtype=bool)).any()


def test_bad_input_is_refused_with_what_is_allowed():
    with pytest.raises(ValueError, match="boolean"):
        box_dimension(np.ones((8, 8)))
    with pytest.raises(ValueError, match="2-D"):
        boundary_pixels(np.ones(8, dtype=bool))
    with pytest.raises(ValueError, match="no pixel"):
        box_dimension(np.zeros((64, 64), dtype=bool))
    with pytest.raises(ValueError, match="fewer than two"):
        box_dimension(np.ones((64, 64), dtype=bool), fit=(3, 3))
    with pytest.raises(ValueError, match=">= 1"):
        box_counts(np.ones((8, 8), dtype=bool), sizes=[0, 2])
