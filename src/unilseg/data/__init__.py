"""Image-text-mask data: the unified JSONL format, loaders for public layouts, generated scenes."""
