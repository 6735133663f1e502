"""Memorisation, diversity, class statistics and mask agreement on tiny inputs with known answers."""
import numpy as np
import pytest

from defectgen.quality.class_stats import class_statistics, compare_class_statistics, wasserstein_1d
from defectgen.quality.diversity import diversity, intra_cluster_diversity, mean_pairwise_distance
from defectgen.quality.mask_agreement import mask_agreement
from defectgen.quality.texture import defect_share, fine_texture, laplacian_magnitude
from defectgen.seg.metrics import iou_per_class
from defectgen.quality.memorisation import leave_one_out_nn, memorisation, nearest_neighbours, pairwise_distances

NAMES = ("background", "inclusion", "patch", "scratch")


def random_images(n, seed, size=16):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


# --- memorisation -------------------------------------------------------------------------------


def test_pixel_rmse_is_exact_for_copies_and_scaled_to_unit_range():
    a = random_images(3, 0)
    d = pairwise_distances(a.reshape(3, -1) / 255.0, a.reshape(3, -1) / 255.0, "rmse")
    assert np.all(np.diag(d) == 0.0)
    black, white = np.zeros((1, 12)), np.ones((1, 12))
    assert pairwise_distances(black, white, "rmse")[0, 0] == pytest.approx(1.0)


def test_exact_copies_are_counted_as_memorised_and_fresh_samples_are_not():
    train = random_images(10, 0)
    fresh = random_images(6, 1)
    generated = np.concatenate([train[[2, 5, 7]], fresh])
    nn = nearest_neighbours(generated.reshape(9, -1) / 255.0, train.reshape(10, -1) / 255.0, "rmse", percentile=5)
    assert nn.memorised.tolist() == [True] * 3 + [False] * 6
    assert nn.nn_index[:3].tolist() == [2, 5, 7]
    assert nn.nn_distance[:3].tolist() == [0.0, 0.0, 0.0]
    assert nn.share_memorised == pytest.approx(3 / 9)


def test_copies_count_even_when_the_training_set_has_duplicates():
    train = random_images(5, 0)
    train = np.concatenate([train, train[:1]])  # LOO distance 0 for two images -> percentile 0
    nn = nearest_neighbours(train[[3]].reshape(1, -1) / 255.0, train.reshape(6, -1) / 255.0, "rmse", percentile=0)
    assert nn.threshold > 0 and nn.memorised.all()


def test_threshold_is_the_percentile_of_leave_one_out_distances():
    train = np.array([[0.0], [1.0], [3.0], [7.0]])  # LOO NN distances: 1, 1, 2, 4
    assert leave_one_out_nn(train, "l2").tolist() == [1.0, 1.0, 2.0, 4.0]
    nn = nearest_neighbours(np.array([[0.5], [5.0], [10.0]]), train, "l2", percentile=50)
    assert nn.threshold == pytest.approx(1.5)
    assert nn.memorised.tolist() == [True, False, False]  # distances 0.5, 2, 3


def test_memorisation_in_both_spaces():
    train = random_images(8, 0)
    feats = np.random.RandomState(0).randn(8, 32)
    result = memorisation(train[:4], train, feats[:4], feats)
    assert result["pixel"].share_memorised == 1.0
    assert result["feature"].share_memorised == 1.0
    assert result["feature"].summary()["distance"] == "cosine"


# --- diversity ----------------------------------------------------------------------------------


def test_collapsed_set_has_zero_diversity_and_diverse_set_more():
    rs = np.random.RandomState(0)
    diverse = rs.randn(12, 32)
    collapsed = np.repeat(diverse[:1], 12, axis=0)
    assert mean_pairwise_distance(collapsed) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_distance(diverse) > 0.5
    assert np.isnan(mean_pairwise_distance(diverse[:1]))


def test_intra_cluster_diversity_averages_groups_of_two_or_more():
    feats = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [1.0, 1.0]])
    nn_index = np.array([0, 0, 1, 2])  # group 0 = {0, 1} (distance 5), groups 1, 2 are singletons
    ic = intra_cluster_diversity(feats, nn_index, "l2")
    assert ic["value"] == pytest.approx(5.0)
    assert (ic["n_groups"], ic["n_groups_used"]) == (3, 1)
    assert np.isnan(intra_cluster_diversity(feats[:2], np.array([0, 1]), "l2")["value"])


def test_copying_each_training_image_once_has_no_intra_cluster_diversity():
    rs = np.random.RandomState(0)
    train = rs.randn(6, 32)
    copies = np.concatenate([train, train])  # every training image copied twice
    varied = train[[0, 0, 1, 1]] + 0.5 * rs.randn(4, 32)
    assert diversity(copies, train)["intra_cluster"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert diversity(varied, train)["intra_cluster"]["value"] > 0.05


# --- class statistics ---------------------------------------------------------------------------


def hand_masks():
    m = np.zeros((4, 10, 10), np.uint8)
    m[0, :5, :] = 1  # inclusion, half the image
    m[1, :, :1] = 1  # inclusion, 10 %
    m[1, 9, :] = 3  # scratch, 10 % (overwrites one inclusion pixel: 9 % inclusion left)
    m[2, :2, :5] = 2  # patch, 10 %
    m[3, :, :] = 255  # fully ignored
    m[3, 0, 0] = 2  # one patch pixel, the only labelled pixel
    return m


def test_class_statistics_on_hand_made_masks():
    s = class_statistics(hand_masks(), NAMES)["classes"]
    assert s["inclusion"]["image_frequency"] == 0.5
    assert s["patch"]["image_frequency"] == 0.5
    assert s["scratch"]["image_frequency"] == 0.25
    assert s["inclusion"]["area_fractions"] == pytest.approx([0.5, 0.09])
    assert s["scratch"]["area_fractions"] == pytest.approx([0.1])
    assert s["patch"]["area_fractions"] == pytest.approx([0.1, 1.0])  # ignore pixels do not count
    assert s["patch"]["pixel_share"] == pytest.approx(11 / 301)


def test_identical_statistics_compare_as_zero_and_shifted_ones_do_not():
    real = class_statistics(hand_masks(), NAMES)
    same = compare_class_statistics(real, real)
    assert same["class_mix_total_variation"] == 0.0
    assert all(c["area_wasserstein"] == 0.0 for c in same["classes"].values())
    only_inclusions = np.zeros((2, 10, 10), np.uint8)
    only_inclusions[:, :, :2] = 1
    diff = compare_class_statistics(real, class_statistics(only_inclusions, NAMES))
    assert diff["class_mix_total_variation"] == pytest.approx(1 - 2 / 5)
    assert diff["classes"]["inclusion"]["area_wasserstein"] > 0
    assert np.isnan(diff["classes"]["scratch"]["area_wasserstein"])  # no generated scratches


def test_wasserstein_matches_known_values():
    assert wasserstein_1d([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert wasserstein_1d([0.0], [0.25]) == pytest.approx(0.25)
    assert wasserstein_1d([0.0, 1.0], [0.5]) == pytest.approx(0.5)


# --- mask agreement -----------------------------------------------------------------------------


def test_iou_counts_with_ignore():
    target = np.array([[[0, 1, 1, 255]]], np.uint8)
    pred = np.array([[[1, 1, 0, 1]]], np.uint8)
    inter, union = iou_per_class(pred, target, 2)
    assert inter.tolist() == [0, 1]
    assert union.tolist() == [2, 3]


def test_mask_agreement_with_a_known_predictor():
    masks = hand_masks()
    images = np.zeros(masks.shape + (3,), np.uint8)
    perfect = mask_agreement(lambda x: masks.copy(), images, masks, NAMES)
    assert perfect["mean_iou_defects"] == 1.0
    assert all(v == 1.0 for v in perfect["iou"].values())
    background_only = mask_agreement(lambda x: np.zeros(x.shape[:3], np.uint8), images, masks, NAMES)
    assert background_only["mean_iou_defects"] == 0.0
    shifted = np.roll(masks, 1, axis=2)  # prediction one pixel off
    partial = mask_agreement(lambda x: shifted, images, masks, NAMES)
    assert 0.0 < partial["iou"]["inclusion"] < 1.0


def test_fine_texture_is_zero_on_flat_images_and_counts_a_checkerboard():
    flat = np.full((2, 8, 8, 1), 90, np.uint8)
    assert fine_texture(flat) == 0.0
    board = (np.indices((8, 8)).sum(axis=0) % 2 * 10).astype(np.uint8)[None, :, :, None]
    lap = laplacian_magnitude(board)
    assert lap[0, 0].sum() == lap[0, -1].sum() == 0  # no four neighbours on the border
    assert fine_texture(board) == 40.0  # every interior pixel differs by 10 from each of its four neighbours
    assert lap.mean() == 40.0 * 36 / 64  # the per-pixel map keeps the border's zeros


def test_defect_share_leaves_ignore_pixels_out_of_the_defects():
    masks = np.array([[[0, 1], [2, 255]]], np.uint8)
    assert defect_share(masks) == 0.5
