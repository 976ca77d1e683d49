"""Class taxonomies: tree-based semantic similarity, class embeddings, WordNet pruned to a tree.

Barz & Denzler (WACV 2019, "Hierarchy-based image embeddings for semantic image retrieval")
measure how alike two classes are by where their paths through a class tree meet: with
``h(n)`` the height of node ``n`` (the longest path from ``n`` down to a leaf; leaves have
height 0) and ``lcs(a, b)`` the lowest common subsumer of ``a`` and ``b``,

    sim(a, b) = 1 - h(lcs(a, b)) / h(root).

Classes are leaves, so ``sim(a, a) = 1``; two classes that only meet at the root have similarity
0. On a tree this similarity matrix is positive semi-definite (an ultrametric), so there are unit
vectors ``phi(c)`` whose dot products reproduce it exactly: :func:`unit_sphere_embeddings`
places them one after the other (the construction of Barz & Denzler 2019: class ``c`` gets the
coordinates that give the right dot products with classes ``0 .. c-1`` plus one new axis that
brings its norm to 1), which is the Cholesky factor ``L`` of the similarity matrix,
``L @ L.T = S``. Barz & Denzler (VISAPP 2022) train with the cosine loss towards these
embeddings (``wsolkit.methods.cosine_dcm``).

WordNet is not a tree: a synset may have several hypernyms. :func:`prune_to_tree` cuts the
subgraph above a set of classes down to a tree the way YOLO9000 does (Redmon & Farhadi, CVPR
2017, Sec. 3), as Barz & Denzler (VISAPP 2022, Sec. 4.1) did for the 80 COCO classes: first the
root paths of the classes that have only one, then, one class at a time, the root path that
adds the fewest new nodes to the tree built so far. :class:`WordNetNouns` reads the noun
hierarchy straight from the WordNet 3.0 database files (``data.noun``, ``index.noun``; Debian's
``wordnet-base`` package puts them in ``/usr/share/wordnet``), so no corpus download is needed.

A taxonomy is stored as text, one ``"child parent"`` pair per line (``#`` starts a comment),
the format of the embedded benchmark's ``taxonomy.txt`` and of the shipped COCO taxonomy
``wsolkit/data/coco_taxonomy.txt`` (:func:`coco_taxonomy`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "COCO_TAXONOMY_PATH",
    "HierarchyError",
    "Taxonomy",
    "WordNetNouns",
    "class_node_name",
    "coco_taxonomy",
    "hierarchy_embeddings",
    "onehot_embeddings",
    "parent_indices",
    "prune_to_tree",
    "read_taxonomy",
    "root_paths",
    "tree_similarity",
    "unit_sphere_embeddings",
]

#: The shipped COCO taxonomy (regenerate with ``python tools/make_coco_taxonomy.py``).
COCO_TAXONOMY_PATH = Path(__file__).resolve().parent / "data" / "coco_taxonomy.txt"


class HierarchyError(ValueError):
    """A taxonomy is not a tree over the given classes, or a class is missing from it."""


def class_node_name(class_name: str) -> str:
    """The taxonomy node of a dataset class name: spaces become underscores ("hot dog" -> "hot_dog")."""
    return class_name.strip().replace(" ", "_")


class Taxonomy:
    """A rooted tree of named nodes.

    Args:
        parents: ``{child: parent}`` for every node except the root.
        source: where the tree came from, for error messages.

    Raises:
        HierarchyError: more or fewer than one root, or a cycle.
    """

    def __init__(self, parents: Mapping[str, str], source: str = "taxonomy") -> None:
        self.parents = dict(parents)
        self.source = source
        nodes = set(self.parents) | set(self.parents.values())
        roots = sorted(nodes - set(self.parents))
        if len(roots) != 1:
            raise HierarchyError(
                f"{source}: expected exactly one root (a node that is never a child), found "
                f"{len(roots)}: {roots[:10]}; add 'node root' lines so that every top node hangs "
                "below one root.")
        self.root = roots[0]
        self.children: dict[str, list[str]] = {n: [] for n in nodes}
        for child, parent in self.parents.items():
            self.children[parent].append(child)
        for start in nodes:  # every node must reach the root
            node, seen = start, {start}
            while node != self.root:
                node = self.parents[node]
                if node in seen:
                    raise HierarchyError(
                        f"{source}: following the parents of {start!r} runs into a cycle at "
                        f"{node!r}; a tree's parent links must lead to the root.")
                seen.add(node)
        self.heights = self._heights()

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "taxonomy") -> Taxonomy:
        """Parses ``"child parent"`` lines (blank lines and ``#`` comments ignored).

        Raises:
            HierarchyError: a line without exactly two names, or a child with two parents.
        """
        parents: dict[str, str] = {}
        for number, raw in enumerate(lines, start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2:
                raise HierarchyError(
                    f"{source}:{number}: {raw.strip()!r}; expected 'child parent', two names "
                    "without spaces (write spaces in names as underscores).")
            child, parent = fields
            if child in parents and parents[child] != parent:
                raise HierarchyError(
                    f"{source}:{number}: {child!r} already has the parent {parents[child]!r}; "
                    f"a tree gives every node one parent (prune a graph with prune_to_tree).")
            parents[child] = parent
        return cls(parents, source)

    def to_lines(self) -> list[str]:
        """``"child parent"`` lines, parents before their children (breadth first, sorted)."""
        out, level = [], [self.root]
        while level:
            following = []
            for node in level:
                for child in sorted(self.children[node]):
                    out.append(f"{child} {node}")
                    following.append(child)
            level = following
        return out

    @property
    def nodes(self) -> list[str]:
        return sorted(self.children)

    @property
    def leaves(self) -> list[str]:
        return sorted(n for n, c in self.children.items() if not c)

    @property
    def height(self) -> int:
        """The height of the root: the longest root-to-leaf path, in edges."""
        return self.heights[self.root]

    def _heights(self) -> dict[str, int]:
        heights: dict[str, int] = {}
        # Leaves first, then any node whose children are all done (no recursion: deep trees).
        pending = {n: len(c) for n, c in self.children.items()}
        ready = [n for n, k in pending.items() if k == 0]
        while ready:
            node = ready.pop()
            heights[node] = 1 + max((heights[c] for c in self.children[node]), default=-1)
            if node != self.root:
                parent = self.parents[node]
                pending[parent] -= 1
                if pending[parent] == 0:
                    ready.append(parent)
        return heights

    def ancestors(self, node: str) -> list[str]:
        """``[node, parent, grandparent, ..., root]``."""
        self._check_node(node)
        path = [node]
        while path[-1] != self.root:
            path.append(self.parents[path[-1]])
        return path

    def lowest_common_subsumer(self, a: str, b: str) -> str:
        """The deepest node that is an ancestor of both (a node is its own ancestor)."""
        above_a = set(self.ancestors(a))
        return next(n for n in self.ancestors(b) if n in above_a)

    def _check_node(self, node: str) -> None:
        if node not in self.children:
            close = [n for n in self.children if n.lower() == node.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HierarchyError(
                f"{self.source}: no node {node!r}{hint}; class names must match the taxonomy's "
                "node names (spaces written as underscores, see class_node_name).")

    def __repr__(self) -> str:
        return (f"Taxonomy({self.source!r}: {len(self.children)} nodes, {len(self.leaves)} "
                f"leaves, root {self.root!r}, height {self.height})")


def read_taxonomy(path: str | os.PathLike) -> Taxonomy:
    """A taxonomy from a ``"child parent"`` text file (e.g. a benchmark root's ``taxonomy.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise HierarchyError(
            f"{path}: no such file; expected a text file of 'child parent' lines (the embedded "
            "benchmark writes taxonomy.txt into each layout's root).")
    with open(path, encoding="utf-8") as f:
        return Taxonomy.from_lines(f, source=str(path))


def coco_taxonomy() -> Taxonomy:
    """The shipped tree over the 80 COCO classes (WordNet 3.0 pruned as YOLO9000 does)."""
    return read_taxonomy(COCO_TAXONOMY_PATH)


def tree_similarity(taxonomy: Taxonomy, classes: Sequence[str]) -> np.ndarray:
    """``S[i, j] = 1 - h(lcs(classes[i], classes[j])) / h(root)`` (Barz & Denzler, WACV 2019).

    Args:
        taxonomy: the class tree.
        classes: ``C`` node names in label order; each must be a leaf.

    Returns:
        ``(C, C)`` float64, symmetric, ones on the diagonal, values in ``[0, 1]``.

    Raises:
        HierarchyError: an unknown class, a class that is not a leaf, a repeated class, or a
            tree of height 0.
    """
    classes = list(classes)
    for name in classes:
        taxonomy._check_node(name)
        if taxonomy.children[name]:
            raise HierarchyError(
                f"{taxonomy.source}: class {name!r} has children "
                f"({sorted(taxonomy.children[name])[:5]}); classes must be leaves, or a class "
                "would be less similar to itself than 1.")
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise HierarchyError(f"classes repeat {repeated}; give each class once.")
    if taxonomy.height == 0:
        raise HierarchyError(f"{taxonomy.source}: the tree is a single node.")
    n = len(classes)
    sim = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            lcs = taxonomy.lowest_common_subsumer(classes[i], classes[j])
            sim[i, j] = sim[j, i] = 1.0 - taxonomy.heights[lcs] / taxonomy.height
    return sim


def unit_sphere_embeddings(similarity: np.ndarray, *, tolerance: float = 1e-9) -> np.ndarray:
    """Unit vectors whose pairwise dot products equal a similarity matrix (Barz & Denzler 2019).

    Class 0 is ``e_0``; class ``c`` takes the first ``c`` coordinates that solve
    ``E[:c, :c] @ x = S[c, :c]`` (its dot products with the classes placed before it) and the
    coordinate ``c`` that makes its norm 1, ``sqrt(1 - |x|^2)``. The result is lower triangular
    with a non-negative diagonal, i.e. the Cholesky factor of ``S``.

    Args:
        similarity: ``(C, C)`` symmetric, ones on the diagonal, positive semi-definite.
        tolerance: how far below zero ``1 - |x|^2`` may fall from rounding before the matrix is
            declared not positive semi-definite.

    Returns:
        ``(C, C)`` float64 ``E`` with unit rows and ``E @ E.T = S``.

    Raises:
        HierarchyError: a non-square or asymmetric matrix, a diagonal other than 1, or a matrix
            that no set of unit vectors can realise (not positive semi-definite).
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise HierarchyError(f"similarity has shape {s.shape}; expected a non-empty (C, C) matrix.")
    if not np.allclose(s, s.T, atol=1e-12) or not np.allclose(np.diag(s), 1.0, atol=1e-12):
        raise HierarchyError("similarity must be symmetric with ones on the diagonal.")
    n = s.shape[0]
    emb = np.zeros((n, n))
    emb[0, 0] = 1.0
    for c in range(1, n):
        # Least squares rather than solve: a singular (merely semi-definite) S leaves zeros on
        # the diagonal of the rows placed so far, and the system stays consistent.
        x = np.linalg.lstsq(emb[:c, :c], s[c, :c], rcond=None)[0]
        rest = 1.0 - float(x @ x)
        if rest < -tolerance or not np.allclose(emb[:c, :c] @ x, s[c, :c], atol=1e-8):
            raise HierarchyError(
                f"similarity is not positive semi-definite: class {c} cannot be placed (1 - |x|^2 "
                f"= {rest:.3g}); tree similarities always can, so check the matrix.")
        emb[c, :c] = x
        emb[c, c] = np.sqrt(max(rest, 0.0))
    return emb


def onehot_embeddings(num_classes: int) -> np.ndarray:
    """``(C, C)`` identity: the cosine loss then maximises the class's entry of the normalised output."""
    if num_classes < 1:
        raise HierarchyError(f"num_classes = {num_classes}; expected at least 1.")
    return np.eye(num_classes)


def hierarchy_embeddings(taxonomy: Taxonomy, classes: Sequence[str]) -> np.ndarray:
    """``(C, C)`` unit class embeddings with ``E @ E.T = tree_similarity(taxonomy, classes)``."""
    return unit_sphere_embeddings(tree_similarity(taxonomy, classes))


def parent_indices(taxonomy: Taxonomy, classes: Sequence[str]) -> np.ndarray:
    """The parent of every class, as an index into the sorted distinct parents: ``(C,)`` int64,
    equal for two classes exactly when they are siblings in the tree (a prediction "right in
    the tree" names a sibling of the true class, or the class itself).

    Raises:
        HierarchyError: a class that is not a node of the tree, or is its root.
    """
    missing = [c for c in classes if c not in taxonomy.parents]
    if missing:
        raise HierarchyError(f"{taxonomy.source}: classes {missing[:5]} have no parent in the tree "
                             f"(not a node, or the root {taxonomy.root!r}).")
    parents = [taxonomy.parents[c] for c in classes]
    names = sorted(set(parents))
    return np.array([names.index(p) for p in parents], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Pruning a graph to a tree (YOLO9000)
# ---------------------------------------------------------------------------------------------


def root_paths(hypernyms: Mapping[str, Sequence[str]], node: str) -> list[list[str]]:
    """Every path from ``node`` up to a root of the graph, ``[node, ..., root]``.

    Args:
        hypernyms: ``{node: its parents}``; a node without parents (or absent) is a root.
        node: where the paths start.
    """
    parents = hypernyms.get(node, ())
    if not parents:
        return [[node]]
    return [[node] + path for parent in parents for path in root_paths(hypernyms, parent)]


def prune_to_tree(hypernyms: Mapping[str, Sequence[str]], classes: Sequence[str], *,
                  names: Mapping[str, str] | None = None, source: str = "graph") -> Taxonomy:
    """The tree YOLO9000 builds from a directed acyclic "is a" graph above ``classes``.

    1. Every class with a single root path contributes that whole path.
    2. The other classes are added one at a time. For each of them and each of its root paths,
       the cost is the number of nodes the path would add: walking up from the class, the nodes
       before the first node already in the tree. The (class, path) pair of smallest cost goes
       in next, attached to the tree at that first node; ties go to the class listed first,
       then to the path listed first (``hypernyms`` order). Attaching at the first shared node
       keeps the result a tree: every node keeps the one parent it got when it was added.

    A class that lies above other classes becomes a leaf of its own below its node (named by
    ``names``), so that classes stay leaves: its similarity to itself is 1 and to the classes
    under the same node the highest the tree allows.

    Args:
        hypernyms: ``{node: parents}`` of the graph (e.g. :meth:`WordNetNouns.hypernym_graph`).
        classes: the nodes that must be in the tree.
        names: optional renaming of the classes in the result (e.g. a synset to its class
            name); other nodes keep their graph names.
        source: what the graph is, for messages.

    Returns:
        The pruned :class:`Taxonomy`.

    Raises:
        HierarchyError: the classes do not all reach the same root, or a class lies above
            another one and ``names`` gives it no leaf name.
    """
    paths = {c: root_paths(hypernyms, c) for c in classes}
    roots = {p[-1] for ps in paths.values() for p in ps}
    if len(roots) != 1:
        raise HierarchyError(f"{source}: the classes reach {len(roots)} roots {sorted(roots)[:5]}; "
                             "expected one (add a common root).")
    parent: dict[str, str] = {}
    in_tree = {next(iter(roots))}

    def attach(path: list[str]) -> None:
        for child, up in zip(path, path[1:]):
            if child in in_tree:
                return
            parent[child] = up
            in_tree.add(child)

    remaining = []
    for c in classes:
        if len(paths[c]) == 1:
            attach(paths[c][0])
        else:
            remaining.append(c)

    def cost(path: list[str]) -> int:
        return next(i for i, n in enumerate(path) if n in in_tree)

    while remaining:
        best = min(((cost(p), i, k) for i, c in enumerate(remaining)
                    for k, p in enumerate(paths[c])))
        _, i, k = best
        attach(paths[remaining.pop(i)][k])
    # A class above other classes (in WordNet every hot dog is a sandwich) would be an inner
    # node, less similar to itself than 1; it becomes a leaf below its own node instead.
    inner = set(parent.values()) & set(classes)
    leaf = {c: (names or {}).get(c, c) for c in classes}
    clashes = [c for c in classes if c in inner and leaf[c] == c]
    if clashes:
        raise HierarchyError(
            f"{source}: the classes {clashes[:5]} are ancestors of other classes; give them leaf "
            "names through `names` (the node keeps its graph name, the leaf gets the new one), "
            "or map them to more specific nodes.")

    def node(n: str) -> str:
        return leaf[n] if n in leaf and n not in inner else n

    renamed = {node(c): node(p) for c, p in parent.items()}
    renamed.update({leaf[c]: c for c in inner})
    return Taxonomy(renamed, source=f"{source}, pruned to a tree")


# ---------------------------------------------------------------------------------------------
# WordNet 3.0 database files
# ---------------------------------------------------------------------------------------------


class WordNetNouns:
    """The noun synsets of a WordNet database directory (the ``wndb(5)`` file format).

    Reads ``index.noun`` (lemma -> synset offsets in sense order) and ``data.noun`` (per synset:
    its words, hypernym pointers ``@`` and instance-hypernym pointers ``@i``, and the gloss).
    Synsets are named as NLTK names them: ``"<first word>.n.<sense number of that word>"``,
    e.g. ``"dog.n.01"``.

    Args:
        root: the directory holding ``index.noun`` and ``data.noun`` (``/usr/share/wordnet``
            with Debian's ``wordnet-base``).

    Raises:
        HierarchyError: a missing file or a line that does not parse.
    """

    def __init__(self, root: str | os.PathLike = "/usr/share/wordnet") -> None:
        self.root = Path(root)
        files = {name: self.root / name for name in ("index.noun", "data.noun")}
        for name, path in files.items():
            if not path.is_file():
                raise HierarchyError(
                    f"{path}: not found; expected a WordNet 3.0 database directory with "
                    "index.noun and data.noun (Debian/Ubuntu: apt-get install wordnet-base, "
                    "then /usr/share/wordnet).")
        self.senses: dict[str, list[int]] = {}
        with open(files["index.noun"], encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.startswith("  "):  # licence header
                    continue
                fields = line.split()
                try:
                    pointer_count = int(fields[3])
                    synset_count = int(fields[2])
                    offsets = fields[4 + pointer_count + 2:]
                    self.senses[fields[0]] = [int(o) for o in offsets[:synset_count]]
                except (IndexError, ValueError):
                    raise HierarchyError(
                        f"{files['index.noun']}:{number}: cannot parse {line.strip()[:80]!r}; "
                        "expected 'lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt "
                        "offset...'.") from None
        self.words: dict[int, list[str]] = {}
        self.hypernyms: dict[int, list[int]] = {}
        self.glosses: dict[int, str] = {}
        with open(files["data.noun"], encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition("|")
                fields = head.split()
                try:
                    offset = int(fields[0])
                    word_count = int(fields[3], 16)
                    words = fields[4:4 + 2 * word_count:2]
                    at = 4 + 2 * word_count
                    pointer_count = int(fields[at])
                    pointers = [fields[at + 1 + 4 * k: at + 5 + 4 * k] for k in range(pointer_count)]
                except (IndexError, ValueError):
                    raise HierarchyError(
                        f"{files['data.noun']}:{number}: cannot parse {line.strip()[:80]!r}; "
                        "expected a wndb(5) data line.") from None
                self.words[offset] = words
                self.hypernyms[offset] = [int(p[1]) for p in pointers
                                          if p[0] in ("@", "@i") and p[2] == "n"]
                self.glosses[offset] = gloss.strip()

    def offsets(self, lemma: str) -> list[int]:
        """The synset offsets of a noun lemma, in sense order."""
        key = lemma.lower().replace(" ", "_")
        if key not in self.senses:
            raise HierarchyError(f"{self.root}/index.noun: no noun {lemma!r}.")
        return self.senses[key]

    def synset(self, name: str) -> int:
        """The offset of a synset named ``"lemma.n.NN"``."""
        lemma, pos, number = name.rsplit(".", 2)
        if pos != "n" or not number.isdigit():
            raise HierarchyError(f"synset name {name!r}: expected 'lemma.n.NN', e.g. 'dog.n.01'.")
        senses = self.offsets(lemma)
        if not 1 <= int(number) <= len(senses):
            raise HierarchyError(f"{name!r}: {lemma!r} has {len(senses)} noun senses.")
        return senses[int(number) - 1]

    def name(self, offset: int) -> str:
        """The NLTK-style name of a synset offset."""
        first = self.words[offset][0].lower()
        return f"{first}.n.{self.senses[first].index(offset) + 1:02d}"

    def hypernym_graph(self, names: Iterable[str]) -> dict[str, list[str]]:
        """``{synset name: hypernym names}`` for the given synsets and everything above them."""
        graph: dict[str, list[str]] = {}
        todo = [self.synset(n) for n in names]
        while todo:
            offset = todo.pop()
            name = self.name(offset)
            if name in graph:
                continue
            graph[name] = [self.name(h) for h in self.hypernyms[offset]]
            todo.extend(self.hypernyms[offset])
        return graph
