"""What every layer uses: the error line, console output, atomic writes, safe paths, signals, workers."""
