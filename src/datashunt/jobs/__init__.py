"""Long-running work: resumable batch runs over files of any size, and the Ray Data engine."""
