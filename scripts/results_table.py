"""Render the README's results tables from the committed results/<scenario>.json files.

    python scripts/results_table.py            # print every scenario's table
    python scripts/results_table.py --write    # rewrite the marked blocks in README.md

The renderers live in ``mmhelpers.results_tables`` (the site's landing page uses them too).
"""

from mmhelpers.results_tables import main

if __name__ == "__main__":
    main()
