# serve PORT: answers every HTTP request with a greeting (busybox httpd with one CGI script).
set -e
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/greet <<'CGI'
#!/bin/sh
. /app/greet.sh
printf 'Content-Type: text/plain\r\n\r\n'
greet "${QUERY_STRING:-world}"
CGI
chmod +x /tmp/www/cgi-bin/greet
exec httpd -f -p "${1:-8080}" -h /tmp/www
