#!/bin/sh
# coreutils tests/timeout/timeout-group.sh's timeout.cmd, rewritten: on INT touch
# int.received and exit; say it runs (timeout.running); give up after $1 seconds.
trap 'touch int.received; exit' INT
touch timeout.running
count=$1
until test -e int.received || test "$count" = 0; do
  sleep 0.1
  count=$(expr "$count" - 1)
done
