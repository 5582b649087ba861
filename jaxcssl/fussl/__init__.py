"""The pure pieces of FUSSL (arXiv 2210.15818), used by :mod:`jaxcssl.learners.fussl`.

* :mod:`~jaxcssl.fussl.pseudo_labels` — fuzzy hard/soft pseudo-labels from the members' votes, member
  errors, the soft-target cross-entropy;
* :mod:`~jaxcssl.fussl.ensemble` — members stacked on a leading axis, ``2m`` views per sample;
* :mod:`~jaxcssl.fussl.schedules` — the paper's step schedule, a constant rate, continuation;
* :mod:`~jaxcssl.fussl.cross_class` — the superclass split of the cross-class study.
"""
