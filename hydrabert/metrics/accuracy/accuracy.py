"""Accuracy as an `evaluate` module that ships with hydrabert.

`evaluate.load("accuracy")` fetches the module from the Hub; this local copy loads by path, offline:
`evaluate.load(os.path.join(hydrabert.metrics.METRICS_DIR, "accuracy"))`. Same inputs and output
as the canonical module (sklearn's accuracy_score).
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy: the fraction of predictions equal to the references."
_CITATION = "@article{scikit-learn, title={Scikit-learn: Machine Learning in {P}ython}, year={2011}}"
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): ground truth labels.
    normalize (`bool`, defaults to True): the fraction (True) or the count (False) of correct predictions.
    sample_weight (`list[float]`, *optional*): per-example weights.
Returns:
    accuracy (`float`)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        sequence = self.config_name == "multilabel"
        value = datasets.Sequence(datasets.Value("int32")) if sequence else datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"
            ],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {
            "accuracy": float(
                accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
            )
        }
