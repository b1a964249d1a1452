"""How results and progress reach the user: one view per output format.

:class:`~gcbatch.views.human.HumanView` (text; live progress on a terminal) and
:class:`~gcbatch.views.machine.JsonView` (``--json``: a JSON document on stdout, events as
JSON lines on stderr) answer the same methods, :class:`~gcbatch.views.view.View`; a
command picks one with :func:`~gcbatch.views.view.make_view` and never prints itself.
"""
