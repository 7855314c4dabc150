"""Quick start: train a small plain VGG on Fashion-MNIST with RepOptSGD.

Constant CSLA scales (the hyper-search initial values, s = t = sqrt(2/l)) are
turned into Grad Mults for every 3x3 conv; the script prints test accuracy.
Runs in about a minute on 2 CPU cores.
"""

import argparse

import keras
import numpy as np

from repopt_tf import RepOptSGD
from repopt_tf import grad_mults_for_model
from repopt_tf.data import load_fashion_mnist


def small_vgg(stages=((16, 2), (32, 2), (64, 2)), num_classes=10):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    blocks = []
    in_channels = 1
    for stage, (width, depth) in enumerate(stages):
        for block in range(depth):
            stride = 2 if block == 0 else 1
            x = keras.layers.ZeroPadding2D(1)(x)
            x = keras.layers.Conv2D(width, 3, strides=stride, use_bias=False,
                                    name=f"stage{stage}_block{block}_conv")(x)
            x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
            x = keras.layers.ReLU()(x)
            scale = 1.0 if block == 0 else np.sqrt(2.0 / block)
            has_identity = stride == 1 and in_channels == width
            blocks.append({
                "conv": np.full(width, scale),
                "1x1": np.full(width, scale),
                "identity": np.ones(width) if has_identity else None,
            })
            in_channels = width
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs), blocks


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_images", type=int, default=20000)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    x_train, y_train = x_train[: args.train_images, ..., None], y_train[: args.train_images]

    model, blocks = small_vgg()
    steps = args.epochs * int(np.ceil(len(x_train) / 128))
    optimizer = RepOptSGD(
        keras.optimizers.schedules.CosineDecay(0.1, steps),
        momentum=0.9, nesterov=True, weight_decay=4e-5,
        grad_mults=grad_mults_for_model(model, blocks),
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs)
    _, accuracy = model.evaluate(x_test[..., None], y_test, verbose=0)
    print(f"RepOptSGD small VGG, Fashion-MNIST test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
