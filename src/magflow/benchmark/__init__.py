"""Multi-magnification benchmarks as inputs: the TCGA-MS, BRACS-MS and generic folder layouts, read into
one table (``layouts``), their folds (``folds``), the BRACS-MS resampling (``resample``), the
``benchmarks:`` config section (``config``) and small synthetic benchmark folders (``benchmark_fixture``).

The ``benchmark`` step (``benchmark``): one model on one benchmark: its PNGs decoded in loader workers and fed
at the size the model takes (``images``), the embeddings file (``output``) and the record with the cms
probes, RankMe by both definitions and the magnification robustness index (``record``)."""
