"""The restore engine behind start-restore, clone-disk, restore-fs and compare."""
