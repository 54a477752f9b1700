"""Files in and out: inputs checked where they enter, output targets, formats, atomic writes.

    paths.py    user paths (~), texts and non-UTF-8 names carried losslessly or refused, bounded input reads
    writers.py  output targets and their confinement, the job's OutputRegistry, mask encoders, overlays, atomic writes
"""
