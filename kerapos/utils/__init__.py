"""The floor below the layers: argument checks and atomic file writes.

Nothing here imports TensorFlow, Keras or any other part of kerapos, so every
package (layers, models, data, training, export) can use it.
"""
