"""Mixed-magnification region aggregation: regions of frozen tile embeddings at several scales, the mixing
encoder and its MEM/CMEM pretraining, and slide-level AB-MIL evaluation."""
