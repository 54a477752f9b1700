"""The Predictor: an image embedded once, masks for any number of texts, over a Backend.

    predictor.py  Predictor, Prediction, ImageEmbedding; the eager PyTorch backend
    transforms.py letterbox and its inverse, soft map, threshold, image decoding
    backends/     the other runtimes (ONNX Runtime, AOTInductor), reduced precision, torch.compile, CPU features
"""
