"""Evaluation: mIoU, oIoU and Prec@X by granularity and source (`python -m unilseg.eval`)."""
