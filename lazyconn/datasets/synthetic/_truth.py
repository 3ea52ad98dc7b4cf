"""The planted truth: networks of bilateral regions and their correlation matrix."""

from __future__ import annotations

import numpy as np

#: Planted networks: name and left-hemisphere blob centres (MNI mm). Every blob is mirrored to
#: the right hemisphere (x -> -x). Blobs of one network are >= 31 mm apart, blobs of different
#: networks >= 29 mm, so regions of ``region_radius`` 10 mm never touch.
NETWORKS: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = (
    ("visual", ((-18, -86, 4), (-44, -72, -8))),
    ("somatomotor", ((-38, -22, 56), (-56, -8, 30))),
    ("default_mode", ((-46, -66, 30), (-58, -16, -18))),
    ("frontoparietal", ((-44, 30, 28), (-28, -58, 52))),
    ("salience", ((-36, 16, 0), (-60, -40, 26))),
    ("limbic", ((-40, 14, -30), (-26, -22, -16))),
)
# Correlation between network time courses (the rest are 0); one anti-correlated pair.
_NETWORK_LINKS = {
    ("visual", "somatomotor"): 0.3,
    ("default_mode", "limbic"): 0.3,
    ("frontoparietal", "salience"): 0.3,
    ("default_mode", "salience"): -0.5,
}
# Region correlation = _SHARE_NETWORK * network correlation (+ _SHARE_PAIR for mirrored regions).
_SHARE_NETWORK = 0.6
_SHARE_PAIR = 0.15


def network_correlation(network_names):
    """Planted correlation between the network time courses."""
    n_net = len(network_names)
    net_corr = np.eye(n_net)
    for (a, b), value in _NETWORK_LINKS.items():
        if a in network_names and b in network_names:
            i, j = network_names.index(a), network_names.index(b)
            net_corr[i, j] = net_corr[j, i] = value
    return net_corr


def region_table(n_networks):
    """Names, networks, MNI centres and mirror-pair index of the regions (left region first)."""
    names, networks, coords, pairs = [], [], [], []
    for name, blobs in NETWORKS[:n_networks]:
        for k, (x, y, z) in enumerate(blobs, start=1):
            for hemi, sign in (("L", 1), ("R", -1)):
                names.append(f"{name}_{k}_{hemi}")
                networks.append(name)
                coords.append((sign * x, y, z))
                pairs.append(len(pairs) // 2)
    return names, networks, np.array(coords, dtype=np.float64), np.array(pairs)


def region_correlation(network_names, region_networks, pairs, net_corr):
    """Planted correlation between the region signals."""
    net_index = np.array([network_names.index(n) for n in region_networks])
    corr = _SHARE_NETWORK * net_corr[np.ix_(net_index, net_index)]
    corr += _SHARE_PAIR * (pairs[:, None] == pairs[None, :])
    np.fill_diagonal(corr, 1.0)
    return corr
