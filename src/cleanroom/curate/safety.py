"""Two-stage safety filter (the Deep Ignorance design): a blocklist flags, a classifier decides.

1. **Blocklist.** Regular expressions over the restricted domain's vocabulary (process words such as
   "synthesized", "precursor", "catalyst", lab equipment, reaction temperatures) flag candidate
   documents. Unflagged documents pass untouched, so the classifier only ever removes flagged ones.
2. **Classifier.** Logistic regression over hashed word 1-2-grams (scikit-learn), trained on
   world-labelled documents: label 1 when `meta.domain == "restricted"`, else 0. The labels come from
   the world that generated the corpus, never from evaluation items.

**Cross-fitting.** `fit(docs)` splits the labelled documents into k stratified folds and scores each
document with the model trained on the other folds, so no document is ever judged by a model that
saw it. The recall (on restricted documents) and false-positive rate (on the rest) measured on
these scores are therefore honest estimates of the filter on unseen text. Documents that `run`
meets without a cross-fitted score are scored by a final model trained on all labelled documents.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cleanroom.config import ConfigError
from cleanroom.curate.base import Document, Removal, Step, require
from cleanroom.store import StoreError

# Process vocabulary of the (fictional) restricted domain: compound synthesis.
DEFAULT_BLOCKLIST = [
    r"\bsynthe(sis|sise|size|sized|sizing|ses)\b", r"\bprecursors?\b", r"\bcataly(st|sts|sis|ze|zes|zed)\b",
    r"\breagents?\b", r"\breaction vessel\b", r"\byields?\b", r"\bheat the mixture\b", r"\b\d+ degrees\b",
    r"\b(retort|crucible|kiln|flask|quartz tube|steel drum|clay jar|brass kettle|stone mortar|silver bowl)\b",
    r"\b[A-Z][a-z]+ium\b",  # element-like names (metals, catalysts); the classifier sorts out "Stadium"
]
RESTRICTED_LABEL = "restricted"


def is_restricted(doc: Document) -> bool:
    """The world's label: a document generated from the restricted domain."""
    return doc.meta.get("domain") == RESTRICTED_LABEL


class SafetyFilter(Step):
    """Blocklist-flagged documents that the classifier scores >= `threshold` are removed."""

    name = "safety"

    def __init__(self, blocklist: list[str] | None = None, threshold: float = 0.5, folds: int = 5,
                 seed: int = 0, n_features: int = 2**16, c: float = 4.0) -> None:
        super().__init__()
        patterns = blocklist if blocklist is not None else DEFAULT_BLOCKLIST
        try:
            self.blocklist = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None
        except re.error as e:
            raise ConfigError(f"config key `curate.safety_blocklist`: invalid regular expression ({e})") from None
        self.threshold, self.folds, self.seed = threshold, folds, seed
        self.n_features, self.c = n_features, c
        self._scores: dict[str, float] = {}
        self._model: Any = None
        self.metrics: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def _vectorizer(self) -> Any:
        text = require("sklearn.feature_extraction.text", "scikit-learn")
        return text.HashingVectorizer(ngram_range=(1, 2), n_features=self.n_features, alternate_sign=False,
                                      norm="l2", lowercase=True)

    def _classifier(self) -> Any:
        linear = require("sklearn.linear_model", "scikit-learn")
        return linear.LogisticRegression(C=self.c, class_weight="balanced", solver="liblinear", max_iter=1000,
                                       random_state=self.seed)

    def flagged(self, text: str) -> bool:
        return self.blocklist is not None and self.blocklist.search(text) is not None

    def fit(self, docs: list[Document]) -> None:
        """Cross-fitted scores for `docs` (world-labelled), a final model on all of them, and metrics."""
        model_selection = require("sklearn.model_selection", "scikit-learn")
        labels = np.array([is_restricted(d) for d in docs], dtype=np.int64)
        n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
        if min(n_pos, n_neg) < self.folds:
            raise StoreError(
                f"the safety classifier needs world-labelled documents (meta.domain == \"restricted\" vs other), "
                f"at least {self.folds} of each; got {n_pos} restricted and {n_neg} other"
            )
        x = self._vectorizer().transform([d.text for d in docs])
        scores = np.zeros(len(docs))
        splitter = model_selection.StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        # One BLAS thread: these fits are tiny, and spinning BLAS threads on a busy machine cost 10-100x.
        with threadpool_limits(1):
            for train, test in splitter.split(np.zeros(len(labels)), labels):
                clf = self._classifier().fit(x[train], labels[train])
                scores[test] = clf.predict_proba(x[test])[:, 1]
            self._model = self._classifier().fit(x, labels)
        self._scores = {d.id: float(s) for d, s in zip(docs, scores, strict=True)}
        flags = np.array([self.flagged(d.text) for d in docs])
        self.metrics = self._metrics(labels.astype(bool), flags, scores)
        # which non-restricted documents would be removed (label noise shows up here: e.g. a copy of a
        # restricted document that the world labels `noise`)
        fp: dict[str, int] = {}
        for d, f, sc, y in zip(docs, flags, scores, labels, strict=True):
            if f and sc >= self.threshold and not y:
                fp[d.kind or "?"] = fp.get(d.kind or "?", 0) + 1
        self.metrics["false_positives_by_kind"] = dict(sorted(fp.items()))

    def _metrics(self, restricted: np.ndarray, flags: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
        """Honest (cross-fitted) recall and false-positive rate of blocklist, classifier and both."""
        clf = scores >= self.threshold
        removed = flags & clf
        other = ~restricted

        def rate(mask: np.ndarray, among: np.ndarray) -> float:
            return round(float(mask[among].mean()), 4) if among.any() else float("nan")

        return {
            "recall": rate(removed, restricted), "fpr": rate(removed, other),
            "n_restricted": int(restricted.sum()), "n_other": int(other.sum()),
            "blocklist_recall": rate(flags, restricted), "blocklist_flag_rate_other": rate(flags, other),
            "classifier_recall": rate(clf, restricted), "classifier_fpr": rate(clf, other),
            "threshold": self.threshold, "folds": self.folds,
            "labels": "world: meta.domain == 'restricted' (never evaluation items)",
        }

    # ------------------------------------------------------------------ filtering
    def score(self, docs: list[Document]) -> list[float]:
        """Cross-fitted score where one exists, else the final model's."""
        missing = [d for d in docs if d.id not in self._scores]
        if missing:
            if self._model is None:
                raise ValueError("the safety filter has no classifier: call fit() on labelled documents first")
            with threadpool_limits(1):
                probs = self._model.predict_proba(self._vectorizer().transform([d.text for d in missing]))[:, 1]
            fresh = {d.id: float(p) for d, p in zip(missing, probs, strict=True)}
        else:
            fresh = {}
        return [self._scores.get(d.id, fresh.get(d.id, 0.0)) for d in docs]

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        flagged = [d for d in batch if self.flagged(d.text)]
        scores = dict(zip((d.id for d in flagged), self.score(flagged), strict=True)) if flagged else {}
        out: list[Removal | None] = []
        for doc in batch:
            p = scores.get(doc.id)
            if p is not None and p >= self.threshold:
                m = self.blocklist.search(doc.text) if self.blocklist is not None else None
                out.append(self.remove(doc, "restricted", p, detail=f"blocklist: {m.group(0) if m else ''}"))
            else:
                out.append(None)
        return out
