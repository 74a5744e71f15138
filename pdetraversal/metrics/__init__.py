"""Evaluation of traversals. No training loss lives here.

`factors`: which dSprites factor each traversal changes, read by a factor regressor from the decoded frames.
"""
