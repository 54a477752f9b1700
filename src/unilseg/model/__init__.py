"""Models: configs, named models and their weights, checkpoints, the build of the network.

    build.py      config -> wired network (+ model.config, model.spec); resolve_model / load_model
    registry.py   named models: config, file, source, sha256; where weights are looked for (download.py fetches)
    config.py     YAML configs and `--opts` overrides; spec.py: InferenceSpec (size, mean/std, context, threshold)
    checkpoint.py safe, strict reads of .pth / .safetensors; convert.py: .pth -> .safetensors
    tokenizer.py  CLIP BPE, cut the way the authors cut
"""
