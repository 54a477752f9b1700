#!/usr/bin/env python3
"""Same flags as the authors' script: python general_inference.py --img IMG --exp "TEXT" --sp OUT.png"""
import sys

from unilseg.cli.segment import main

if __name__ == "__main__":
    sys.exit(main())
