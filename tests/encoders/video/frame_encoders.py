"""Small frame encoders for the video tests: fresh Keras models mapping frames to vectors."""

import keras


def conv_frame_encoder(width=4, batchnorm=False, seed=0):
    """A uint8-frame CNN: rescale, one 3x3 convolution, optional BatchNorm, global average."""
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = [
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(width, 3, kernel_initializer=init, name="conv"),
    ]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D()]
    return keras.Sequential(layers, name="frame_cnn")
