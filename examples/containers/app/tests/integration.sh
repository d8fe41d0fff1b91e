# Integration test: ask the running service (its URL is $1) over HTTP, retrying while it starts.
set -e
url="$1/cgi-bin/greet?team"
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  if answer=$(wget -q -O - "$url" 2>/dev/null); then
    [ "$answer" = "Hello, team!" ] || { echo "FAIL: got '$answer'"; exit 1; }
    echo "integration test passed: $answer"
    exit 0
  fi
  sleep 0.5
done
echo "FAIL: no answer from $url"
exit 1
