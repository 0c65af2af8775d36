"""streamtok inside the training frameworks people run: HF Accelerate, Lightning, torchtitan.

One module per framework, each importing its framework on import, so ``import streamtok``
(and this package) imports none of them::

    from .accelerate import prepare_loader      # HF Accelerate
    from .lightning import StreamtokDataModule  # Lightning
    from .torchtitan import TitanLoader         # torchtitan

The same two facts hold in all three. A streamtok loader already gives each data-parallel
rank its own batches (rank ``r`` takes its ``B`` windows of every global step), so a
framework must not split it a second time; and its state is one position for all ranks, so
one copy, saved once, resumes every rank, at any data-parallel size.
"""
