"""Style classifiers: which dynasty, genre or author a poem reads like, from character n-grams.

    clf = style.Classifier().fit(train_examples, 'dynasty')     # dicts with 'text' and the field
    clf.predict(['白日依山尽，黄河入海流。'])                     # ['唐']
    clf.accuracy(test_texts, test_labels)
    authors = style.Classifier(top_authors=20).fit(train_examples, 'author')

Features are TF-IDF weights of character 1- and 2-grams (sublinear tf, seen in 2+ poems);
the model is a logistic regression trained by SGD, one-vs-rest, which is minutes faster than
LogisticRegression's solvers on the train split's 330k poems and a million features. On the
whole train split and 2 cores, fitting takes about 90 s for dynasty, 70 s for genre and 20 s
for the top 20 authors; `max_train` caps the examples (drawn with a fixed seed): 100_000 fits in
25 s, about one point of accuracy lower.

Authors: only the `top_authors` authors with the most training poems are classes, and poems by
anyone else are left out of training; accuracy() likewise skips labels the classifier does not
know. An 'other' class would be most of the corpus and would reward guessing it. Anonymous
names (佚名, 无名氏) and collection headings standing in for an author are never classes.
"""

import collections
import random

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier

NOT_AUTHORS = frozenset({'', '佚名', '无名氏', '郊庙朝会歌辞'})


class Classifier:
  """A TF-IDF + logistic regression classifier of one label field."""

  def __init__(self, top_authors=20, max_train=None, ngram_range=(1, 2), alpha=1e-6,
               epochs=10, seed=0):
    self.top_authors = top_authors
    self.max_train = max_train
    self.field = None
    self.classes = ()
    self._seed = seed
    self._vectorizer = TfidfVectorizer(analyzer='char', ngram_range=ngram_range, min_df=2,
                                       sublinear_tf=True, dtype=np.float32)
    self._model = SGDClassifier(loss='log_loss', alpha=alpha, max_iter=epochs, tol=None,
                                random_state=seed, n_jobs=-1)

  def fit(self, examples, field):
    """Trains on `examples` (dicts or objects with .text and the field); returns self."""
    examples = list(examples)
    get = (lambda e, k: e[k]) if isinstance(examples[0], dict) else getattr
    pairs = [(get(e, 'text'), get(e, field)) for e in examples]
    if field == 'author':
      counts = collections.Counter(a for _, a in pairs if a not in NOT_AUTHORS)
      # Ties broken by name, so the classes are the same on every machine.
      top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.top_authors]
      keep = {a for a, _ in top}
      pairs = [p for p in pairs if p[1] in keep]
    pairs = [p for p in pairs if p[1]]
    if self.max_train and len(pairs) > self.max_train:
      pairs = random.Random(self._seed).sample(pairs, self.max_train)
    texts, labels = zip(*pairs)
    if len(set(labels)) < 2:
      raise ValueError(f'{field}: need at least two classes, got {set(labels)}')
    self._model.fit(self._vectorizer.fit_transform(texts), labels)
    self.field = field
    self.classes = tuple(self._model.classes_)
    return self

  def predict(self, texts):
    return list(self._model.predict(self._vectorizer.transform(list(texts))))

  def accuracy(self, texts, labels):
    """Share of `texts` predicted as their label, over the labels that are classes (nan if
    none is)."""
    known = set(self.classes)
    pairs = [(t, l) for t, l in zip(texts, labels) if l in known]
    if not pairs:
      return float('nan')
    texts, labels = zip(*pairs)
    return float(np.mean(np.array(self.predict(texts)) == np.array(labels)))
