"""VICRegL's local criterion: cell coordinates of crop boxes, location and feature matching on
hand-made boxes, and the local loss of identical views."""

import torch

from sslray.methods.vicregl import VICRegLConfig
from sslray.methods.vicregl_local import ViewGeometry, box_grid, local_pair_loss, nearest_matches


def test_box_grid_places_cell_centres_in_image_coordinates():
    grid = box_grid(torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 2, 2)
    assert grid[0].tolist() == [[[4.0, 4.0], [12.0, 4.0]], [[4.0, 12.0], [12.0, 12.0]]]  # (x, y) per cell


def test_location_matching_picks_the_geometrically_nearest_location():
    """View 1 covers [0, 16]^2, view 2 covers [8, 24]^2 of the same image, 2x2 cells each.

    View 1's cell (1, 1) is centred at (12, 12), exactly where view 2's cell (0, 0) is: the
    only zero-distance pair, so with one match kept that is the match.
    """
    grid_1 = box_grid(torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 2, 2).flatten(1, 2)
    grid_2 = box_grid(torch.tensor([[8.0, 8.0, 24.0, 24.0]]), 2, 2).flatten(1, 2)
    keep, match = nearest_matches(torch.cdist(grid_1, grid_2), k=1)
    assert keep.tolist() == [[3]] and match.tolist() == [[0]]
    keep, match = nearest_matches(torch.cdist(grid_1, grid_2), k=None)  # every location, raster order
    assert keep.tolist() == [[0, 1, 2, 3]] and match.tolist() == [[0, 0, 0, 0]]
    keep, match = nearest_matches(torch.cdist(grid_2, grid_1), k=2)  # back: (12,12)->(12,12) and a tie at 8
    assert keep[0, 0].item() == 0 and match[0, 0].item() == 3


def test_feature_matching_picks_the_nearest_embedding_and_keeps_the_closest_k():
    a = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]])
    b = torch.tensor([[[5.0, 5.2], [0.0, 1.0], [20.0, 20.0]]])
    keep, match = nearest_matches(torch.cdist(a, b), k=2)
    assert keep.tolist() == [[0, 1]] and match.tolist() == [[1, 0]]  # (9, 0) is farthest from all of b


def test_local_loss_of_identical_views_has_no_invariance_term():
    torch.manual_seed(4)
    maps = torch.randn(4, 3, 3, 8)
    grid = ViewGeometry(torch.tensor([[0.0, 0.0, 30.0, 30.0]] * 4), *(torch.zeros(4, dtype=torch.bool),) * 3)
    loss, terms = local_pair_loss(maps, maps, grid.grid(3, 3), grid.grid(3, 3), VICRegLConfig())
    assert terms["inv"].item() == 0.0 and loss.item() > 0  # var/cov still see 4 images per slot


def test_view_geometry_flips_and_transposes_the_cell_grid():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 3)  # 2x2 cells of 2 px: centres at 1 and 3
    no, yes = torch.tensor(False), torch.tensor(True)
    geometry = ViewGeometry(boxes, torch.stack([no, yes, no]), torch.zeros(3, dtype=torch.bool),
                            torch.stack([no, no, yes]))
    x = geometry.grid(2, 2)[..., 0]  # the x coordinate of every cell, (B, rows, columns)
    assert x[0].tolist() == [[1.0, 3.0], [1.0, 3.0]]  # as cropped
    assert x[1].tolist() == [[3.0, 1.0], [3.0, 1.0]]  # flipped along width
    assert x[2].tolist() == [[1.0, 1.0], [3.0, 3.0]]  # transposed: columns become rows
