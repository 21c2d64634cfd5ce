"""Keras files read and written as data: zip, JSON and HDF5, with no Keras or TensorFlow."""
