# greet NAME: the whole application.
greet() { echo "Hello, ${1:-world}!"; }
