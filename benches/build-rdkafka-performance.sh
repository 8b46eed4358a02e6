#!/usr/bin/env bash
# Builds librdkafka's load generator, rdkafka_performance, from the librdkafka source vendored in
# the rdkafka-sys crate (crates.io), statically, without SSL/SASL/curl: the neutral load tool
# `flumen bench` is compared with in docs/benchmarks.md. With RDKAFKA_SSL=1 it is built with
# OpenSSL (SSL, SASL_SSL, SCRAM) into target/rdkafka-ssl, for benches/security.py.
#
# Usage: benches/build-rdkafka-performance.sh [OUT_DIR]   (default: target/rdkafka)
# Prints the path of the binary. Needs: cargo (to fetch the crate), a C toolchain (build-essential), zlib and
# zstd headers (zlib1g-dev, libzstd-dev) — installed with apt-get when missing and root.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${RDKAFKA_SYS_VERSION:-4.8.0+2.3.0}"
SSL="${RDKAFKA_SSL:-0}"
if [ "$SSL" = 1 ]; then OUT="${1:-target/rdkafka-ssl}"; else OUT="${1:-target/rdkafka}"; fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
bin="$OUT/rdkafka_performance"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
if ! command -v cc >/dev/null || ! [ -e /usr/include/zlib.h ] || ! [ -e /usr/include/zstd.h ] \
  || { [ "$SSL" = 1 ] && ! [ -e /usr/include/openssl/ssl.h ]; }; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential zlib1g-dev libzstd-dev libssl-dev >&2
  else
    echo "need a C compiler and zlib1g-dev, libzstd-dev" >&2; exit 1
  fi
fi
src="$OUT/src"
if ! [ -d "$src/librdkafka" ]; then
  # cargo fetches the crate through whatever registry access this machine has.
  proj="$OUT/fetch"
  mkdir -p "$proj/src"
  printf '[package]\nname = "fetch-rdkafka-sys"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nrdkafka-sys = { version = "=%s", default-features = false }\n' "$VERSION" > "$proj/Cargo.toml"
  echo 'fn main() {}' > "$proj/src/main.rs"
  (cd "$proj" && cargo fetch -q)
  crate="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-"${VERSION}" | head -1)"
  mkdir -p "$src"
  cp -r "$crate/librdkafka" "$src/librdkafka"
fi
cd "$src/librdkafka"
if ! [ -e src/librdkafka.a ]; then
  if [ "$SSL" = 1 ]; then
    ./configure --enable-ssl --disable-gssapi --disable-curl --disable-lz4-ext >&2
  else
    ./configure --disable-ssl --disable-gssapi --disable-curl --disable-lz4-ext >&2
  fi
  make -j"$(nproc)" libs >&2
fi
if [ "$SSL" = 1 ]; then
  cc -O2 -o "$bin" examples/rdkafka_performance.c -Isrc src/librdkafka.a -lssl -lcrypto -lz -lzstd -lpthread -lm -ldl -lrt
else
  cc -O2 -o "$bin" examples/rdkafka_performance.c -Isrc src/librdkafka.a -lz -lzstd -lpthread -lm -ldl -lrt
fi
echo "$bin"
