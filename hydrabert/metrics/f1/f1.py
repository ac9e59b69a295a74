"""F1 as an `evaluate` module that ships with hydrabert (loads by path, offline).

Same inputs and output as the canonical `evaluate` module (sklearn's f1_score); the "multilabel"
config takes multi-hot rows.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1: the harmonic mean of precision and recall, F1 = 2 * (P * R) / (P + R)."
_CITATION = "@article{scikit-learn, title={Scikit-learn: Machine Learning in {P}ython}, year={2011}}"
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): ground truth labels.
    labels (`list[int]`, *optional*): the labels to include when average is not 'binary'.
    pos_label (`int`, defaults to 1): the positive class for average='binary'.
    average (`str`, defaults to 'binary'): 'binary', 'micro', 'macro', 'weighted', 'samples' or None.
    sample_weight (`list[float]`, *optional*): per-example weights.
    zero_division (`int` or `str`, defaults to 0): the value when a class has no predictions.
Returns:
    f1 (`float` or `list[float]` when average=None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        sequence = self.config_name == "multilabel"
        value = datasets.Sequence(datasets.Value("int32")) if sequence else datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"
            ],
        )

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        pos_label=1,
        average="binary",
        sample_weight=None,
        zero_division=0,
    ):
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {"f1": score.tolist() if average is None else float(score)}
