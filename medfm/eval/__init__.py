"""Evaluation: segmentation and classification metrics, bootstrap intervals, subgroups, reports.

Metrics are pure functions over numpy arrays (:mod:`~medfm.eval.seg_metrics`,
:mod:`~medfm.eval.cls_metrics`, :mod:`~medfm.eval.calibration`); the folder and CSV
evaluations (:func:`medfm.eval.evaluate_seg.evaluate_segmentation`,
:func:`medfm.eval.evaluate_cls.evaluate_classification`) wrap them. Nothing is imported
here, so that ``medfm --help`` does not load MONAI or SciPy.
"""
