"""Write examples/byod/images.npz: 4 classes of 16x16 RGB images (a bright quadrant + noise)."""

import numpy as np

rng = np.random.default_rng(0)


def images(n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 4  # (N,) integer labels 0..3
    x = rng.integers(0, 96, (n, 16, 16, 3), dtype=np.uint8)  # (N, H, W, C) uint8 0..255
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        x[i, 8 * row : 8 * row + 8, 8 * col : 8 * col + 8] += 128
    return x, y


x_train, y_train = images(160)
x_test, y_test = images(40)
np.savez("examples/byod/images.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
