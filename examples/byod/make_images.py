"""Write examples/byod/images.npz: 4 classes of 16x16 RGB noise tinted red, green, blue, grey."""

import numpy as np

rng = np.random.default_rng(0)


def images(n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 4  # (N,) integer labels 0..3
    x = rng.integers(0, 128, (n, 16, 16, 3), dtype=np.uint8)  # (N, H, W, C) uint8 0..255
    for i, label in enumerate(y):
        channels = [int(label)] if label < 3 else [0, 1, 2]  # red, green, blue; grey: all three
        x[i, :, :, channels] += 96
    return x, y


x_train, y_train = images(160)
x_test, y_test = images(40)
np.savez("examples/byod/images.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
