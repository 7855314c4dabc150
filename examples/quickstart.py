"""Quick start: train a small RepOpt-VGG on Fashion-MNIST with RepOptSGD.

The constant CSLA scales are the hyper-search initial values
(s = t = sqrt(2/l)), read from an untrained HS model; they become Grad Mults
for every 3x3 conv. Prints the test accuracy; about a minute on 2 CPU cores.
"""

import argparse

import keras
import numpy as np

from repopt_tf import RepOptSGD
from repopt_tf import grad_mults_for_model
from repopt_tf.data import load_fashion_mnist
from repopt_tf.models import build_model
from repopt_tf.models import extract_scales
from repopt_tf.models import reinitialize


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_images", type=int, default=20000)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    x_train = x_train[: args.train_images, ..., None]
    y_train = y_train[: args.train_images]

    shape = (28, 28, 1)
    scales = extract_scales(build_model("repopt_vgg_s", 10, shape, kind="hs"))
    model = build_model("repopt_vgg_s", 10, shape)
    reinitialize(model, scales, seed=0)
    steps = args.epochs * int(np.ceil(len(x_train) / 128))
    optimizer = RepOptSGD(
        keras.optimizers.schedules.CosineDecay(0.1, steps),
        momentum=0.9, nesterov=True, weight_decay=4e-5,
        grad_mults=grad_mults_for_model(model, scales),
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs)
    _, accuracy = model.evaluate(x_test[..., None], y_test, verbose=0)
    print(f"RepOpt-VGG-S + RepOptSGD, Fashion-MNIST test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
