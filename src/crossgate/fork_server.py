"""Imported first by the fit workers' fork server (bench.worker_context), before torch: from then on the
server ends when the bench that started it does, even while it is still importing, and so, through their
own lifeline, do the workers it forked. Importing this module anywhere else ties that process to its parent."""
from .lifeline import end_with_parent

end_with_parent()
