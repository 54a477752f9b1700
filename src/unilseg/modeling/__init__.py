"""The UniLSeg network, one module per box of the paper's figure."""
