"""Tree similarity, unit-sphere class embeddings and YOLO9000 pruning on hand-built trees."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from wsolkit.hierarchy import (
    COCO_TAXONOMY_PATH,
    HierarchyError,
    Taxonomy,
    WordNetNouns,
    class_node_name,
    coco_taxonomy,
    hierarchy_embeddings,
    prune_to_tree,
    read_taxonomy,
    root_paths,
    tree_similarity,
    unit_sphere_embeddings,
)

WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(not (WORDNET / "data.noun").is_file(),
                                   reason="WordNet 3.0 database (Debian wordnet-base) not installed")

# r -> A -> {a1, a2};  r -> B -> B1 -> {b1, b2};  r -> c
LINES = ["A r", "B r", "c r", "a1 A", "a2 A", "B1 B", "b1 B1", "b2 B1"]


def test_heights_root_and_lines_round_trip():
    tree = Taxonomy.from_lines(LINES + ["# a comment", ""])
    assert tree.root == "r"
    assert tree.heights == {"a1": 0, "a2": 0, "b1": 0, "b2": 0, "c": 0, "A": 1, "B1": 1, "B": 2, "r": 3}
    assert tree.leaves == ["a1", "a2", "b1", "b2", "c"]
    assert tree.ancestors("b2") == ["b2", "B1", "B", "r"]
    assert tree.lowest_common_subsumer("b1", "b2") == "B1"
    assert tree.lowest_common_subsumer("a1", "b1") == "r"
    assert Taxonomy.from_lines(tree.to_lines()).parents == tree.parents


def test_tree_similarity_hand_computed():
    tree = Taxonomy.from_lines(LINES)
    sim = tree_similarity(tree, ["a1", "a2", "b1", "b2", "c"])
    expected = np.array([
        [1, 2 / 3, 0, 0, 0],
        [2 / 3, 1, 0, 0, 0],
        [0, 0, 1, 2 / 3, 0],
        [0, 0, 2 / 3, 1, 0],
        [0, 0, 0, 0, 1],
    ])
    np.testing.assert_allclose(sim, expected, atol=1e-15)


def test_embeddings_reproduce_similarities_and_equal_cholesky():
    tree = Taxonomy.from_lines(LINES + ["b3 B"])  # b3 meets b1 at B: 1 - 2/3
    classes = ["b1", "a1", "b3", "a2", "b2", "c"]
    sim = tree_similarity(tree, classes)
    assert sim[0, 2] == pytest.approx(1 / 3)
    emb = hierarchy_embeddings(tree, classes)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(emb @ emb.T, sim, atol=1e-12)
    np.testing.assert_allclose(emb, np.linalg.cholesky(sim), atol=1e-12)
    assert np.allclose(np.triu(emb, 1), 0)


def test_benchmark_taxonomy_embeddings():
    from wsolkit.data.synthetic import CLASS_NAMES, taxonomy_lines

    tree = Taxonomy.from_lines(taxonomy_lines())
    emb = hierarchy_embeddings(tree, list(CLASS_NAMES))
    cos = emb @ emb.T
    # Classes 2k and 2k+1 share a body colour (a superclass), everything else meets at the root.
    assert cos[0, 1] == pytest.approx(0.5) and cos[2, 3] == pytest.approx(0.5)
    assert cos[1, 2] == pytest.approx(0.0, abs=1e-12) and cos[0, 9] == pytest.approx(0.0, abs=1e-12)


def test_not_positive_semidefinite_is_refused():
    bad = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]])
    with pytest.raises(HierarchyError, match="not positive semi-definite"):
        unit_sphere_embeddings(bad)


@pytest.mark.parametrize("lines, message", [
    (["a r", "b s"], "exactly one root"),
    (["a r", "a s", "r s"], "already has the parent"),
    (["a b", "b a", "c r", "r s"], "runs into a cycle"),
    (["a r extra"], "expected 'child parent'"),
])
def test_malformed_taxonomies(lines, message):
    with pytest.raises(HierarchyError, match=message):
        Taxonomy.from_lines(lines)


def test_classes_must_be_known_leaves():
    tree = Taxonomy.from_lines(LINES)
    with pytest.raises(HierarchyError, match="classes must be leaves"):
        tree_similarity(tree, ["a1", "A"])
    with pytest.raises(HierarchyError, match="did you mean 'a1'"):
        tree_similarity(tree, ["A1"])


def test_root_paths():
    graph = {"x": ["p", "q"], "p": ["R"], "q": ["R"], "R": []}
    assert root_paths(graph, "x") == [["x", "p", "R"], ["x", "q", "R"]]


def test_prune_yolo9000_order_and_cost():
    graph = {
        "c1": ["P"], "P": ["X"], "X": ["R"],          # c1: one path
        "c4": ["S"], "S": ["Y"], "Y": ["R"],          # c4: one path
        "c2": ["Q", "P"], "Q": ["Z"], "Z": ["W"], "W": ["R"],  # via Q adds 4 nodes, via P 1
        "c3": ["T", "S"], "T": ["R"],                 # via T adds 2, via S (in the tree) 1
        "R": [],
    }
    tree = prune_to_tree(graph, ["c2", "c3", "c1", "c4"])
    assert tree.parents["c2"] == "P" and tree.parents["c3"] == "S"
    assert "Q" not in tree.parents and "T" not in tree.parents
    assert sorted(tree.leaves) == ["c1", "c2", "c3", "c4"]
    # Without c4 the single-path stage does not add S, and c3 costs 2 either way: the first
    # listed path (via T) wins the tie.
    tree = prune_to_tree({k: v for k, v in graph.items() if k != "c4"}, ["c2", "c3", "c1"])
    assert tree.parents["c3"] == "T"


def test_prune_class_above_another_becomes_leaf():
    graph = {"hotdog": ["sandwich"], "sandwich": ["food"], "bread": ["food"], "food": []}
    tree = prune_to_tree(graph, ["sandwich", "hotdog", "bread"],
                         names={"sandwich": "sandwich_class"})
    assert tree.parents["sandwich_class"] == "sandwich" and tree.parents["hotdog"] == "sandwich"
    sim = tree_similarity(tree, ["sandwich_class", "hotdog", "bread"])
    np.testing.assert_allclose(sim, [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    with pytest.raises(HierarchyError, match="ancestors of other classes"):
        prune_to_tree(graph, ["sandwich", "hotdog"])


def test_shipped_coco_taxonomy_has_the_80_classes():
    spec = importlib.util.spec_from_file_location(
        "make_coco_taxonomy", Path(__file__).resolve().parents[1] / "tools" / "make_coco_taxonomy.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tree = coco_taxonomy()
    classes = [class_node_name(n) for n in tool.COCO_SYNSETS]
    assert len(classes) == 80 and sorted(tree.leaves) == sorted(classes)
    sim = tree_similarity(tree, classes)
    car, truck, person = classes.index("car"), classes.index("truck"), classes.index("person")
    assert sim[car, truck] > sim[car, person]
    if (WORDNET / "data.noun").is_file():
        assert COCO_TAXONOMY_PATH.read_text() == tool.build(str(WORDNET))


@needs_wordnet
def test_wordnet_reader():
    wordnet = WordNetNouns(WORDNET)
    dog = wordnet.synset("dog.n.01")
    assert dog == 2084071 and wordnet.name(dog) == "dog.n.01"
    graph = wordnet.hypernym_graph(["dog.n.01"])
    assert graph["dog.n.01"] == ["canine.n.02", "domestic_animal.n.01"]
    assert graph["entity.n.01"] == []
    with pytest.raises(HierarchyError, match="has 7 noun senses"):
        wordnet.synset("dog.n.08")


def test_read_taxonomy_missing_file(tmp_path):
    with pytest.raises(HierarchyError, match="no such file"):
        read_taxonomy(tmp_path / "taxonomy.txt")
