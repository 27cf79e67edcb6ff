"""Evaluation: segmentation and classification metrics, bootstrap intervals, subgroups, reports.

Metrics are pure functions over numpy arrays (:mod:`~medfm.eval.segmentation`,
:mod:`~medfm.eval.classification`, :mod:`~medfm.eval.calibration`); the folder and CSV
evaluations (:func:`medfm.eval.seg_evaluation.evaluate_segmentation`,
:func:`medfm.eval.cls_evaluation.evaluate_classification`) wrap them. Nothing is imported
here, so that ``medfm --help`` does not load MONAI or SciPy.
"""
