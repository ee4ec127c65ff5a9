"""Multi-magnification benchmarks as inputs: the TCGA-MS, BRACS-MS and generic folder layouts, read into
one table (``layouts``), their folds (``folds``), the BRACS-MS resampling (``resample``), the
``benchmarks:`` config section (``config``) and small synthetic benchmark folders (``fixtures``)."""
