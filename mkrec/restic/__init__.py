"""Mode restic: restic repositories as the backup target and a restore source. restic does the
deduplication, encryption and storage backends; mkrec adds the layout, the rescue disc and the
bare-metal restore around it."""
