"""Keras: live models and files (.keras, .h5, .weights.h5) read and written, with or without Keras installed."""
