#!/usr/bin/env sh
# Renders worker-template.yaml for one compile key: ./render.sh gpt2:p64:n32:greedy [PREFIX]
set -eu
key="$1"
prefix="${2:-batchgen}"
model="${key%%:*}"
name="$(printf '%s' "$key" | tr ':._' '---' | tr 'A-Z' 'a-z')"
echo "# batchgen worker for compile key $key (queue $prefix:gen:$key), rendered from worker-template.yaml"
sed -e '1,/^apiVersion/{/^#/d;}' -e "s|__NAME__|$name|g" -e "s|__MODEL__|$model|g" -e "s|__KEY__|$key|g" -e "s|__QUEUE__|$prefix:gen:$key|g" "$(dirname "$0")/worker-template.yaml"
