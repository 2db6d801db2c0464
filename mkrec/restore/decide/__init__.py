"""Deciding the restore: the backup set and its saved layout read, the disks here mapped to the saved
ones, partitions and LVs sized, every refusal made; the result is a Plan, a value shown to the person
before anything is written. Nothing here writes to a disk (and nothing here imports from apply/)."""
