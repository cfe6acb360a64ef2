#!/usr/bin/env bash
# The long fuzz campaign (not run by CI: it takes several minutes).
#
#   bash ci/fuzz-campaign.sh [N] [SEED]
#
# N byte flips of a small model (each run through `jsae forward` and
# `jsae inspect`), N/2 byte flips of a checkpoint (each through
# `jsae train --resume`), and N/4 hostile values of a random root attribute
# on each of the two (NaN, ±inf, 1e300, Int.max, strings where numbers
# belong, ...). Default N = 1400, SEED = 20261128.
#
# Every run must end as a one-line refusal (exit 2) naming the file, or as a
# success whose output is right (bit-identical to the unflipped baseline when
# the file still reads as the same model); no signal, no hang (60 s limit), no
# input file changed. Counts go to stdout and to $JSAE_FUZZ_REPORT
# (default: fuzz-campaign.txt); the command fails if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1400}"
SEED="${2:-20261128}"
REPORT="${JSAE_FUZZ_REPORT:-$PWD/fuzz-campaign.txt}"
swift build --build-tests
JSAE_FUZZ_CAMPAIGN="$N" JSAE_FUZZ_SEED="$SEED" JSAE_FUZZ_REPORT="$REPORT" \
    swift test --skip-build --filter 'FuzzCampaign'
echo "counts: $(head -1 "$REPORT")"
