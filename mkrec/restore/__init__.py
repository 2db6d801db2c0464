"""The restore engine behind start-restore, clone-disk, restore-fs and compare (the table in
actions.py). decide/ reads the set and the saved layout and returns a Plan; apply/ carries a confirmed
plan out as journaled steps; rebuild.py, restorefs.py and compare.py are the ways in, one entry
function per action."""
