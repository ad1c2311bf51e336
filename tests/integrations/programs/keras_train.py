"""A small Keras 3 (torch backend) training with UnbrokenCallback; writes its final weights to OUT."""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import unbroken  # noqa: E402
from unbroken.integrations.keras import UnbrokenCallback  # noqa: E402


class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.01)  # the "training"


def main(out, epochs):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    with unbroken.init(name="keras", keep=unbroken.keep_latest(3)) as run:
        model.fit(x, y, epochs=epochs, batch_size=32, shuffle=False, verbose=0, validation_split=0.25,
                  callbacks=[UnbrokenCallback(run), Slow()])
        if not run.preempted:
            np.save(out, np.concatenate([w.ravel() for w in model.get_weights()]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
