"""One leaderboard for every method of the book, under one protocol (Choe et al., CVPR 2020).

============== ==================================================================================
module         what it holds
============== ==================================================================================
``entries``    the methods, the chapter runs each is read from, finding them, the runs added here
``protocol``   the full-supervision and test splits; map and threshold chosen on full supervision
``references`` the centre-Gaussian, true-mask and few-shot fully supervised baselines
``board``      rows, scores with intervals, paired differences, the table
``published``  Choe et al.'s own table and the comparison of rankings
============== ==================================================================================
"""

from .board import (LAYOUT_NAMES, METRICS, Missing, Row, board_table, center_row, difference,
                    few_shot_row, method_row, scores, upper_bound_row)
from .entries import (ENTRIES, LAYOUTS, Entry, FoundRuns, LeaderboardError, entry, find_runs,
                      train_added_runs)
from .protocol import FULLSUP_PER_CLASS, ProtocolSplits, fullsup_rows, protocol_splits
from .published import CHOE_2020, CHOE_SOURCE, choe_table, ranking_agreement
from .references import cam_grid

__all__ = ["CHOE_2020", "CHOE_SOURCE", "ENTRIES", "FULLSUP_PER_CLASS", "LAYOUTS", "LAYOUT_NAMES",
           "METRICS", "Entry", "FoundRuns", "LeaderboardError", "Missing",
           "ProtocolSplits", "Row", "board_table", "cam_grid", "center_row", "choe_table",
           "difference", "entry", "few_shot_row", "find_runs", "fullsup_rows", "method_row",
           "protocol_splits", "ranking_agreement", "scores", "train_added_runs",
           "upper_bound_row"]
