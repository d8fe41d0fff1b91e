# Unit tests: greet's output, without a server.
set -e
. /app/greet.sh
[ "$(greet outpost)" = "Hello, outpost!" ] || { echo "FAIL: greet outpost"; exit 1; }
[ "$(greet)" = "Hello, world!" ] || { echo "FAIL: greet with no name"; exit 1; }
echo "unit tests: 2 passed"
