#!/bin/sh
# Harmless sample installer: run by berth from the package folder with BERTH_* variables
# (SPEC 4.5). It only records what it would install, next to the site.
set -e
echo "installing $BERTH_PACKAGE level $BERTH_LEVEL (was $BERTH_PREVIOUS_LEVEL) at $BERTH_SITE_NAME"
cat RELEASE-NOTES.txt
echo "$BERTH_PACKAGE $BERTH_LEVEL $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$BERTH_SITE_DIR/installed-software.txt"
