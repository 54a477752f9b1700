"""Tasks on top of the predictor: label maps (several classes at once) and video frames.

Each goes from an image embedding and texts to its outputs in memory; writing files is the batch layer's.
"""
